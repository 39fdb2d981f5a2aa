package localaws

import (
	"fmt"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/policy"
)

// CredentialsFile is the AWS shared-credentials file `envdr local serve` writes in its directory.
const CredentialsFile = "credentials"

// RenderedRoles maps `envdr policy render`'s IAM documents to the stand-in's roles.
var RenderedRoles = map[string]string{
	policy.DaemonPolicy:   iam.RoleDaemon,
	policy.ProducerPolicy: iam.RoleProducer,
	policy.OperatorPolicy: iam.RoleOperator,
	policy.RewrapPolicy:   iam.RoleRewrap,
}

// LoadRenderedPolicies attaches to the daemon, producer, operator and rewrap roles the identity
// policies `envdr policy render` generates for cfg (the stand-in's account and role names are
// render's defaults). The key policies stay the keys' own (KMS's default: the account root,
// which delegates to these IAM policies).
func LoadRenderedPolicies(m *iam.IAM, cfg *config.Config) error {
	docs, err := policy.Render(cfg, policy.Options{})
	if err != nil {
		return fmt.Errorf("render policies: %w", err)
	}
	for _, d := range docs {
		if role, ok := RenderedRoles[d.Name]; ok {
			if err := m.SetPolicy(role, d.Doc); err != nil {
				return err
			}
		}
	}
	return nil
}
