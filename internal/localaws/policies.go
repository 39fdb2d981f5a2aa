package localaws

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/policy"
)

// CredentialsFile is the AWS shared-credentials file `envdr local serve` writes in its directory.
const CredentialsFile = "credentials"

// RoleOf names the stand-in role that carries a rendered IAM document: iam-NAME.json is the
// policy of role envdr-NAME, as terraform/modules/iam names the roles. Every IAM document
// `envdr policy render` produces gets its role, so a role added to render needs no change here.
func RoleOf(document string) (string, bool) {
	name, ok := strings.CutPrefix(document, "iam-")
	if !ok || !strings.HasSuffix(name, ".json") {
		return "", false
	}
	return "envdr-" + strings.TrimSuffix(name, ".json"), true
}

// LoadRenderedPolicies attaches to each role the identity policy `envdr policy render` generates
// for cfg (the stand-in's account and role names are render's defaults), adding the roles the
// stand-in does not have yet. Call it before writing the credentials file, so that every rendered
// role has a profile.
func LoadRenderedPolicies(m *iam.IAM, cfg *config.Config) error {
	docs, err := policy.Render(cfg, policy.Options{})
	if err != nil {
		return fmt.Errorf("render policies: %w", err)
	}
	for _, d := range docs {
		role, ok := RoleOf(d.Name)
		if !ok {
			continue
		}
		m.AddRole(role)
		if err := m.SetPolicy(role, d.Doc); err != nil {
			return fmt.Errorf("rendered %s: %w", d.Name, err)
		}
	}
	return nil
}

// RenderedKeyPolicies are the key policies `envdr policy render` generates for the provisioned
// keys, by key ARN: cfg's own keys (the multi-Region key's primary and replicas, in mrk mode),
// and each region's independent key as a config in independent mode on those keys renders it.
func RenderedKeyPolicies(cfg *config.Config, keys map[string]RegionKeys) (map[string]*policy.Document, error) {
	out := map[string]*policy.Document{}
	add := func(c *config.Config) error {
		docs, err := policy.Render(c, policy.Options{})
		if err != nil {
			return fmt.Errorf("render key policies: %w", err)
		}
		byName := map[string]*policy.Document{}
		for _, d := range docs {
			byName[d.Name] = d.Doc
		}
		for _, r := range c.Regions {
			d := byName[policy.KeyPolicyPrefix+r.Name+".json"]
			if d == nil {
				return fmt.Errorf("render key policies: no %s%s.json", policy.KeyPolicyPrefix, r.Name)
			}
			out[r.Key] = d
		}
		return nil
	}
	if err := add(cfg); err != nil {
		return nil, err
	}
	ind := *cfg
	ind.Regions = append([]config.Region(nil), cfg.Regions...)
	for i, r := range ind.Regions {
		k := keys[r.Name].Independent
		if k == "" {
			return out, nil
		}
		ind.Regions[i].Key, ind.Regions[i].Mode = k, config.ModeIndependent
	}
	if err := add(&ind); err != nil {
		return nil, err
	}
	return out, nil
}

// ApplyKeyPolicies puts the rendered key policies (RenderedKeyPolicies) on the keys, through
// each region's KMS as the admin identity: PutKeyPolicy is a key administration action the
// rendered policies keep for the account, so it works again on every start.
func ApplyKeyPolicies(ctx context.Context, kc map[string]*kms.Client, cfg *config.Config, keys map[string]RegionKeys) error {
	docs, err := RenderedKeyPolicies(cfg, keys)
	if err != nil {
		return err
	}
	for _, r := range cfg.Regions {
		for _, arn := range []string{keys[r.Name].MRK, keys[r.Name].Independent} {
			d := docs[arn]
			if arn == "" || d == nil {
				continue
			}
			if _, err := kc[r.Name].PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(arn), Policy: aws.String(string(d.JSON()))}); err != nil {
				return fmt.Errorf("%s: PutKeyPolicy %s: %w", r.Name, arn, err)
			}
		}
	}
	return nil
}
