package kms

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"time"
)

// Grants (https://docs.aws.amazon.com/kms/latest/developerguide/grants.html): per key and
// Region (a replica's grants are its own), effective at once (the stand-in has no eventual
// consistency, so a grant token is never needed but is checked when given), with the
// encryption-context constraints EncryptionContextSubset and EncryptionContextEquals.

type grantConstraints struct {
	EncryptionContextSubset map[string]string `json:"EncryptionContextSubset,omitempty"`
	EncryptionContextEquals map[string]string `json:"EncryptionContextEquals,omitempty"`
}

type grant struct {
	ID                string            `json:"id"`
	Token             string            `json:"token"`
	Name              string            `json:"name,omitempty"`
	Grantee           string            `json:"grantee"`
	RetiringPrincipal string            `json:"retiring,omitempty"`
	Operations        []string          `json:"operations"`
	Constraints       *grantConstraints `json:"constraints,omitempty"`
	Created           time.Time         `json:"created"`
}

// grantOperations are the operations a grant on a symmetric encryption key may allow
// (CreateGrant, Operations).
var grantOperations = map[string]bool{
	"Decrypt": true, "Encrypt": true, "GenerateDataKey": true, "GenerateDataKeyWithoutPlaintext": true,
	"ReEncryptFrom": true, "ReEncryptTo": true, "CreateGrant": true, "RetireGrant": true, "DescribeKey": true,
}

// cryptoGrantOps take an encryption context, so constraints apply to them; a grant with a
// constraint may not allow any other operation (CreateGrant, Constraints).
var cryptoGrantOps = map[string]bool{
	"Decrypt": true, "Encrypt": true, "GenerateDataKey": true, "GenerateDataKeyWithoutPlaintext": true,
	"ReEncryptFrom": true, "ReEncryptTo": true,
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// allows reports whether g lets principal perform op with the encryption context ctx.
func (g *grant) allows(principal, op string, ctx map[string]string) bool {
	if g.Grantee != principal {
		return false
	}
	found := false
	for _, o := range g.Operations {
		found = found || o == op
	}
	if !found {
		return false
	}
	if c := g.Constraints; c != nil {
		if c.EncryptionContextEquals != nil {
			if len(ctx) != len(c.EncryptionContextEquals) {
				return false
			}
			for k, v := range c.EncryptionContextEquals {
				if ctx[k] != v {
					return false
				}
			}
		}
		for k, v := range c.EncryptionContextSubset {
			if got, ok := ctx[k]; !ok || got != v {
				return false
			}
		}
	}
	return true
}

type createGrantRequest struct {
	KeyId             *string
	GranteePrincipal  *string
	RetiringPrincipal *string
	Operations        []string
	Constraints       *grantConstraints
	Name              *string
	GrantTokens       []string
	DryRun            *bool
}

func opCreateGrant(s *Service, region string, body []byte) (any, *apiError) {
	var req createGrantRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	if str(req.GranteePrincipal) == "" {
		return nil, errValidation("GranteePrincipal is required.")
	}
	if len(req.Operations) == 0 {
		return nil, errValidation("Operations is required.")
	}
	for _, o := range req.Operations {
		if !grantOperations[o] {
			return nil, errValidation("Operation " + o + " is not valid for a grant on a symmetric encryption KMS key.")
		}
		if req.Constraints != nil && !cryptoGrantOps[o] {
			return nil, errValidation("Constraints are valid only for grants that allow cryptographic operations, not " + o + ".")
		}
	}
	return updateKey(s, region, str(req.KeyId), func(_ *state, k *key) (any, *apiError) {
		if e := notPendingDeletion(k); e != nil {
			return nil, e
		}
		// The same name, grantee, retiring principal, operations and constraints: the same
		// grant (CreateGrant is idempotent by Name).
		for _, g := range k.Grants {
			if req.Name != nil && g.Name == *req.Name && g.Grantee == *req.GranteePrincipal {
				return map[string]any{"GrantId": g.ID, "GrantToken": g.Token}, nil
			}
		}
		ops := append([]string(nil), req.Operations...)
		sort.Strings(ops)
		g := &grant{
			ID: randomHex(32), Token: "envdrgrant" + randomHex(48), Name: str(req.Name),
			Grantee: *req.GranteePrincipal, RetiringPrincipal: str(req.RetiringPrincipal),
			Operations: ops, Constraints: req.Constraints, Created: s.now(),
		}
		k.Grants = append(k.Grants, g)
		return map[string]any{"GrantId": g.ID, "GrantToken": g.Token}, nil
	})
}

type grantEntry struct {
	KeyId             string            `json:"KeyId"`
	GrantId           string            `json:"GrantId"`
	Name              string            `json:"Name,omitempty"`
	CreationDate      *epochTime        `json:"CreationDate"`
	GranteePrincipal  string            `json:"GranteePrincipal"`
	RetiringPrincipal string            `json:"RetiringPrincipal,omitempty"`
	IssuingAccount    string            `json:"IssuingAccount"`
	Operations        []string          `json:"Operations"`
	Constraints       *grantConstraints `json:"Constraints,omitempty"`
}

func entry(st *state, k *key, g *grant) grantEntry {
	return grantEntry{KeyId: k.Arn, GrantId: g.ID, Name: g.Name, CreationDate: ept(g.Created),
		GranteePrincipal: g.Grantee, RetiringPrincipal: g.RetiringPrincipal,
		IssuingAccount: "arn:aws:iam::" + st.Account + ":root", Operations: g.Operations, Constraints: g.Constraints}
}

func opListGrants(s *Service, region string, body []byte) (any, *apiError) {
	var req struct {
		KeyId, Marker, GrantId, GranteePrincipal *string
		Limit                                    *int32
	}
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	limit, e := inRange("Limit", req.Limit, 50, 1, 100)
	if e != nil {
		return nil, e
	}
	return viewKey(s, region, str(req.KeyId), false, func(st *state, k *key) (any, *apiError) {
		var all []grantEntry
		for _, g := range k.Grants {
			if (req.GrantId != nil && g.ID != *req.GrantId) || (req.GranteePrincipal != nil && g.Grantee != *req.GranteePrincipal) {
				continue
			}
			all = append(all, entry(st, k, g))
		}
		return grantPage(all, str(req.Marker), limit), nil
	})
}

func opListRetirableGrants(s *Service, region string, body []byte) (any, *apiError) {
	var req struct {
		RetiringPrincipal, Marker *string
		Limit                     *int32
	}
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if str(req.RetiringPrincipal) == "" {
		return nil, errValidation("RetiringPrincipal is required.")
	}
	limit, e := inRange("Limit", req.Limit, 50, 1, 100)
	if e != nil {
		return nil, e
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var all []grantEntry
	for _, k := range sortedKeys(s.st.Regions[region]) {
		for _, g := range k.Grants {
			if g.RetiringPrincipal == *req.RetiringPrincipal {
				all = append(all, entry(s.st, k, g))
			}
		}
	}
	return grantPage(all, str(req.Marker), limit), nil
}

// grantPage is the ListGrants-style page of grants (ordered by grant ID) after marker.
func grantPage(all []grantEntry, marker string, limit int32) map[string]any {
	sort.Slice(all, func(i, j int) bool { return all[i].GrantId < all[j].GrantId })
	var names []string
	for _, g := range all {
		names = append(names, g.GrantId)
	}
	return listPage("Grants", all, names, marker, limit)
}

// removeGrant deletes the grant named by token, or by key and grant ID.
func removeGrant(s *Service, region, token, keyID, grantID string) (any, *apiError) {
	return s.mutateOp(func(st *state) (any, *apiError) {
		k, i := findGrant(st, region, token, keyID, grantID)
		if k == nil {
			if token != "" {
				return nil, clientErr("InvalidGrantTokenException", "The grant token is not valid.")
			}
			return nil, clientErr("InvalidGrantIdException", "Grant ID "+grantID+" is not valid for "+keyID+".")
		}
		k.Grants = append(k.Grants[:i], k.Grants[i+1:]...)
		return struct{}{}, nil
	})
}

// findGrant finds a grant by token (any key of the region) or by key and ID. Caller holds mu.
func findGrant(st *state, region, token, keyID, grantID string) (*key, int) {
	rs := st.Regions[region]
	if rs == nil {
		return nil, -1
	}
	if token != "" {
		for _, k := range rs.Keys {
			for i, g := range k.Grants {
				if g.Token == token {
					return k, i
				}
			}
		}
		return nil, -1
	}
	k, e := st.resolve(region, keyID, false)
	if e != nil {
		return nil, -1
	}
	for i, g := range k.Grants {
		if g.ID == grantID {
			return k, i
		}
	}
	return nil, -1
}

func opRetireGrant(s *Service, region string, body []byte) (any, *apiError) {
	var req struct{ GrantToken, KeyId, GrantId *string }
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if str(req.GrantToken) == "" && (str(req.KeyId) == "" || str(req.GrantId) == "") {
		return nil, errValidation("Specify GrantToken, or KeyId and GrantId.")
	}
	return removeGrant(s, region, str(req.GrantToken), str(req.KeyId), str(req.GrantId))
}

func opRevokeGrant(s *Service, region string, body []byte) (any, *apiError) {
	var req struct{ KeyId, GrantId *string }
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if str(req.GrantId) == "" {
		return nil, errValidation("GrantId is required.")
	}
	return removeGrant(s, region, "", str(req.KeyId), str(req.GrantId))
}

// grantAllows reports whether a grant on the key lets principal perform op (a kms: action
// without its prefix) with ctx.
func (s *Service) grantAllows(region, keyARN, principal, op string, ctx map[string]string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.st.resolve(region, keyARN, false)
	if e != nil {
		return false
	}
	for _, g := range k.Grants {
		if g.allows(principal, op, ctx) {
			return true
		}
	}
	return false
}

// knownGrantTokens checks the grant tokens of a request: each must name a grant in the region
// (InvalidGrantTokenException otherwise).
func (s *Service) knownGrantTokens(region string, tokens []string) *apiError {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, t := range tokens {
		if k, _ := findGrant(s.st, region, t, "", ""); k == nil {
			return clientErr("InvalidGrantTokenException", "A grant token in GrantTokens is not valid.")
		}
	}
	return nil
}

// retireAllowed: the retiring principal may retire a grant, and so may the grantee when the
// grant allows RetireGrant (RetireGrant, API reference).
func (s *Service) retireAllowed(region, principal string, body []byte) bool {
	var req struct{ GrantToken, KeyId, GrantId *string }
	if decode(body, &req) != nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, i := findGrant(s.st, region, str(req.GrantToken), str(req.KeyId), str(req.GrantId))
	if k == nil {
		return false
	}
	g := k.Grants[i]
	if g.RetiringPrincipal == principal {
		return true
	}
	for _, o := range g.Operations {
		if o == "RetireGrant" && g.Grantee == principal {
			return true
		}
	}
	return false
}
