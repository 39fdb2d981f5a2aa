package kms

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
)

// Authorizer decides whether the caller of an authenticated request may perform a KMS action.
// keyPolicy is the key's policy (nil for operations on no key: CreateKey, ListKeys,
// ListAliases, ListRetirableGrants, GenerateRandom, which IAM policies alone authorize). It
// returns the AccessDenied message ("" when allowed), whether the denial is explicit (a Deny
// statement: no grant can lift it), and false when the request carries no identity (a handler
// served without authentication, as the unit tests do): then nothing is checked.
type Authorizer interface {
	Authorize(r *http.Request, region string, action, resource string, keyPolicy *string, ctx map[string][]string) (denied string, explicit, ok bool)
	// Principal is the caller's ARN (what grants name as GranteePrincipal).
	Principal(r *http.Request) (string, bool)
}

// authCheck is one action on one key (or on no key) with its condition keys.
type authCheck struct {
	action string
	keyID  string // "" for operations on no key
	// fromBlob: find the key from the ciphertext when keyID is empty (Decrypt, ReEncrypt).
	blob    []byte
	context map[string]string
	withCtx bool // kms:EncryptionContext* keys apply to this operation
}

// authChecks lists what an operation needs, following each operation's "Required permissions"
// in the AWS KMS API reference (https://docs.aws.amazon.com/kms/latest/APIReference/), e.g.
// ReEncrypt needs kms:ReEncryptFrom on the source key and kms:ReEncryptTo on the destination
// key (https://docs.aws.amazon.com/kms/latest/APIReference/API_ReEncrypt.html), CreateAlias
// kms:CreateAlias on the key (and the alias), and the cryptographic operations their own action
// with the encryption context as kms:EncryptionContext:KEY and kms:EncryptionContextKeys
// (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html).
func authChecks(op string, body []byte) []authCheck {
	var req struct {
		KeyId, SourceKeyId, DestinationKeyId, TargetKeyId, AliasName *string
		CiphertextBlob                                               []byte
		EncryptionContext, SourceEncryptionContext                   map[string]string
		DestinationEncryptionContext                                 map[string]string
	}
	_ = json.Unmarshal(body, &req)
	action := "kms:" + op
	switch op {
	case "CreateKey", "ListKeys", "GenerateRandom", "ListRetirableGrants":
		return []authCheck{{action: action}}
	case "ListAliases":
		if req.KeyId == nil {
			return []authCheck{{action: action}}
		}
	case "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext":
		return []authCheck{{action: action, keyID: str(req.KeyId), context: req.EncryptionContext, withCtx: true}}
	case "Decrypt":
		return []authCheck{{action: action, keyID: str(req.KeyId), blob: req.CiphertextBlob, context: req.EncryptionContext, withCtx: true}}
	case "ReEncrypt":
		return []authCheck{
			{action: "kms:ReEncryptFrom", keyID: str(req.SourceKeyId), blob: req.CiphertextBlob, context: req.SourceEncryptionContext, withCtx: true},
			{action: "kms:ReEncryptTo", keyID: str(req.DestinationKeyId), context: req.DestinationEncryptionContext, withCtx: true},
		}
	case "CreateAlias", "UpdateAlias":
		return []authCheck{{action: action, keyID: str(req.TargetKeyId)}}
	case "DeleteAlias":
		return []authCheck{{action: action, keyID: str(req.AliasName)}}
	}
	return []authCheck{{action: action, keyID: str(req.KeyId)}}
}

// authorize runs the checks of one request. A key that does not resolve is left to the
// operation, which answers NotFoundException as AWS does.
func (s *Service) authorize(r *http.Request, region, op string, body []byte) *apiError {
	if s.authz == nil {
		return nil
	}
	principal, ok := s.authz.Principal(r)
	if !ok {
		return nil
	}
	var tokens struct{ GrantTokens []string }
	_ = json.Unmarshal(body, &tokens)
	if e := s.knownGrantTokens(region, tokens.GrantTokens); e != nil {
		return e
	}
	if op == "RetireGrant" && s.retireAllowed(region, principal, body) {
		return nil
	}
	for _, c := range authChecks(op, body) {
		resource, policy, cond := "*", (*string)(nil), map[string][]string{}
		if c.keyID != "" || c.blob != nil {
			arn, p, aliases, found := s.keyForAuth(region, c.keyID, c.blob)
			if !found {
				continue
			}
			resource, policy = arn, &p
			if len(aliases) > 0 {
				cond["kms:ResourceAliases"] = aliases
			}
			if strings.HasPrefix(c.keyID, "alias/") || strings.Contains(c.keyID, ":alias/") {
				cond["kms:RequestAlias"] = []string{c.keyID[strings.Index(c.keyID, "alias/"):]}
			}
		}
		if c.withCtx && len(c.context) > 0 {
			keys := make([]string, 0, len(c.context))
			for k, v := range c.context {
				keys = append(keys, k)
				cond["kms:EncryptionContext:"+k] = []string{v}
			}
			sort.Strings(keys)
			cond["kms:EncryptionContextKeys"] = keys
		}
		msg, explicit, ok := s.authz.Authorize(r, region, c.action, resource, policy, cond)
		if !ok {
			return nil
		}
		if msg == "" {
			continue
		}
		// A grant allows what the policies do not, but never past an explicit deny.
		grantOp := strings.TrimPrefix(c.action, "kms:")
		if !explicit && resource != "*" && grantOperations[grantOp] && s.grantAllows(region, resource, principal, grantOp, c.context) {
			continue
		}
		return clientErr("AccessDeniedException", msg)
	}
	return nil
}

// keyForAuth resolves a key (ID, ARN, alias) or, without one, the key a ciphertext names, and
// returns its ARN, policy and aliases in region.
func (s *Service) keyForAuth(region, keyID string, blob []byte) (arn, policy string, aliases []string, found bool) {
	if keyID == "" {
		h, ok := parseCiphertext(blob)
		if !ok {
			return "", "", nil, false
		}
		keyID = h.keyID
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.st.resolve(region, keyID, true)
	if e != nil {
		return "", "", nil, false
	}
	for name, a := range s.st.Regions[region].Aliases {
		if a.TargetID == k.ID {
			aliases = append(aliases, name)
		}
	}
	sort.Strings(aliases)
	return k.Arn, k.Policy, aliases, true
}
