package kms

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/envdr/envdr/internal/localaws/iampolicy"
	"github.com/envdr/envdr/policy"
)

type opFunc func(s *Service, region string, body []byte) (any, *apiError)

// operations maps X-Amz-Target operation names to their implementations.
var operations map[string]opFunc

func init() {
	operations = map[string]opFunc{
		"CreateKey":                       opCreateKey,
		"DescribeKey":                     opDescribeKey,
		"ListKeys":                        opListKeys,
		"ReplicateKey":                    opReplicateKey,
		"UpdatePrimaryRegion":             opUpdatePrimaryRegion,
		"CreateAlias":                     opCreateAlias,
		"UpdateAlias":                     opUpdateAlias,
		"DeleteAlias":                     opDeleteAlias,
		"ListAliases":                     opListAliases,
		"GenerateDataKey":                 opGenerateDataKey,
		"GenerateDataKeyWithoutPlaintext": opGenerateDataKeyWithoutPlaintext,
		"Encrypt":                         opEncrypt,
		"Decrypt":                         opDecrypt,
		"ReEncrypt":                       opReEncrypt,
		"GenerateRandom":                  opGenerateRandom,
		"EnableKey":                       opEnableKey,
		"DisableKey":                      opDisableKey,
		"ScheduleKeyDeletion":             opScheduleKeyDeletion,
		"CancelKeyDeletion":               opCancelKeyDeletion,
		"EnableKeyRotation":               opEnableKeyRotation,
		"DisableKeyRotation":              opDisableKeyRotation,
		"GetKeyRotationStatus":            opGetKeyRotationStatus,
		"RotateKeyOnDemand":               opRotateKeyOnDemand,
		"ListKeyRotations":                opListKeyRotations,
		"GetKeyPolicy":                    opGetKeyPolicy,
		"PutKeyPolicy":                    opPutKeyPolicy,
		"ListKeyPolicies":                 opListKeyPolicies,
		"TagResource":                     opTagResource,
		"UntagResource":                   opUntagResource,
		"ListResourceTags":                opListResourceTags,
		"UpdateKeyDescription":            opUpdateKeyDescription,
		"CreateGrant":                     opCreateGrant,
		"ListGrants":                      opListGrants,
		"ListRetirableGrants":             opListRetirableGrants,
		"RetireGrant":                     opRetireGrant,
		"RevokeGrant":                     opRevokeGrant,
	}
}

// Limits from the KMS API reference.
const (
	maxPlaintext        = 4096
	maxCiphertext       = 6144
	maxDataKeyBytes     = 1024
	maxOnDemandRotation = 25
	defaultRotationDays = 365
	minRotationDays     = 90
	maxRotationDays     = 2560
	defaultPendingDays  = 30
	minPendingDays      = 7
	maxPendingDays      = 30
)

// ---- shapes the operations share ----

// viewKey resolves keyID in region under the read lock and returns what fn
// reads from the key. fn must not change the state and must copy out all it
// returns that is used after the lock is released.
func viewKey[T any](s *Service, region, keyID string, allowAlias bool, fn func(st *state, k *key) (T, *apiError)) (T, *apiError) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.st.resolve(region, keyID, allowAlias)
	if e != nil {
		var zero T
		return zero, e
	}
	return fn(s.st, k)
}

// mutateOp is Service.mutate for an operation: fn also gives its output.
func (s *Service) mutateOp(fn func(st *state) (any, *apiError)) (any, *apiError) {
	var out any
	e := s.mutate(func(st *state) *apiError {
		var e *apiError
		out, e = fn(st)
		return e
	})
	if e != nil {
		return nil, e
	}
	return out, nil
}

// updateKey resolves keyID in region (key ID or key ARN only, as the
// management operations require) and applies fn to it under the write lock;
// the state is persisted if fn succeeds.
func updateKey(s *Service, region, keyID string, fn func(st *state, k *key) (any, *apiError)) (any, *apiError) {
	return s.mutateOp(func(st *state) (any, *apiError) {
		k, e := st.resolve(region, keyID, false)
		if e != nil {
			return nil, e
		}
		return fn(st, k)
	})
}

// viewKeyOp and updateKeyOp are viewKey (without aliases) and updateKey for
// an operation whose request is only a KeyId.
func viewKeyOp(s *Service, region string, body []byte, fn func(st *state, k *key) (any, *apiError)) (any, *apiError) {
	var req keyIDRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	return viewKey(s, region, str(req.KeyId), false, fn)
}

func updateKeyOp(s *Service, region string, body []byte, fn func(st *state, k *key) (any, *apiError)) (any, *apiError) {
	var req keyIDRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), fn)
}

// notPendingDeletion is the error AWS gives for managing a key that is
// pending deletion.
func notPendingDeletion(k *key) *apiError {
	if k.pendingDeletion() {
		return errInvalidState(k.Arn + " is pending deletion.")
	}
	return nil
}

// ---- keys ----

func opCreateKey(s *Service, region string, body []byte) (any, *apiError) {
	var req createKeyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if req.KeySpec != "" && req.CustomerMasterKeySpec != "" {
		return nil, errValidation("You cannot specify KeySpec and CustomerMasterKeySpec in the same request.")
	}
	for _, spec := range []string{req.KeySpec, req.CustomerMasterKeySpec} {
		if spec != "" && spec != "SYMMETRIC_DEFAULT" {
			return nil, errUnsupported("The KMS stand-in supports only SYMMETRIC_DEFAULT keys, not " + spec + ".")
		}
	}
	if req.KeyUsage != "" && req.KeyUsage != "ENCRYPT_DECRYPT" {
		return nil, errValidation("KeyUsage " + req.KeyUsage + " is not valid for a SYMMETRIC_DEFAULT key.")
	}
	if req.Origin != "" && req.Origin != "AWS_KMS" {
		return nil, errUnsupported("The KMS stand-in supports only Origin AWS_KMS, not " + req.Origin + ".")
	}
	if req.CustomKeyStoreId != nil {
		return nil, errUnsupported("The KMS stand-in has no custom key stores.")
	}
	if e := validateDescription(req.Description); e != nil {
		return nil, e
	}
	if e := validatePolicy(req.Policy); e != nil {
		return nil, e
	}
	tags, e := validateTags(req.Tags)
	if e != nil {
		return nil, e
	}
	multi := req.MultiRegion != nil && *req.MultiRegion
	id, err := newKeyID(multi)
	if err != nil {
		return nil, errInternal(err.Error())
	}
	now := s.now()
	m, err := newMaterial(now, "")
	if err != nil {
		return nil, errInternal(err.Error())
	}
	return s.mutateOp(func(st *state) (any, *apiError) {
		k := &key{
			ID:          id,
			Region:      region,
			Arn:         keyArn(region, st.Account, id),
			Description: str(req.Description),
			Created:     now,
			State:       stateEnabled,
			MultiRegion: multi,
			Policy:      policyOrDefault(req.Policy, st.Account),
			Tags:        tags,
			Materials:   []*material{m},
		}
		if multi {
			k.PrimaryRegion = region
		}
		st.Regions[region].Keys[id] = k
		return map[string]any{"KeyMetadata": st.metadata(k)}, nil
	})
}

func opDescribeKey(s *Service, region string, body []byte) (any, *apiError) {
	var req keyIDRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	return viewKey(s, region, str(req.KeyId), true, func(st *state, k *key) (any, *apiError) {
		return map[string]any{"KeyMetadata": st.metadata(k)}, nil
	})
}

func opListKeys(s *Service, region string, body []byte) (any, *apiError) {
	var req listRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	limit, e := inRange("Limit", req.Limit, 100, 1, 1000)
	if e != nil {
		return nil, e
	}
	s.mu.RLock()
	keys := sortedKeys(s.st.Regions[region])
	type entry struct {
		KeyId  string `json:"KeyId"`
		KeyArn string `json:"KeyArn"`
	}
	all := make([]entry, len(keys))
	names := make([]string, len(keys))
	for i, k := range keys {
		all[i] = entry{k.ID, k.Arn}
		names[i] = k.ID
	}
	s.mu.RUnlock()
	return listPage("Keys", all, names, str(req.Marker), limit), nil
}

func opReplicateKey(s *Service, region string, body []byte) (any, *apiError) {
	var req replicateKeyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	target := str(req.ReplicaRegion)
	if e := validateDescription(req.Description); e != nil {
		return nil, e
	}
	if e := validatePolicy(req.Policy); e != nil {
		return nil, e
	}
	tags, e := validateTags(req.Tags)
	if e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(st *state, p *key) (any, *apiError) {
		if e := multiRegionPrimary(p); e != nil {
			return nil, e
		}
		if target == region {
			return nil, errValidation("ReplicaRegion " + target + " is the primary key's Region.")
		}
		if !s.ensureRegion(st, target) {
			return nil, errValidation("ReplicaRegion " + target + " is not a Region this stand-in serves.")
		}
		if r := st.Regions[target].Keys[p.ID]; r != nil {
			return nil, clientErr("AlreadyExistsException", "Key '"+r.Arn+"' already exists")
		}
		if p.State == stateUpdating {
			return nil, errInvalidState(p.Arn + " is Updating.")
		}
		// AWS creates the replica asynchronously: it is Creating for a while
		// (https://docs.aws.amazon.com/kms/latest/APIReference/API_ReplicateKey.html).
		replicaState, settles := stateEnabled, time.Time{}
		if s.creating > 0 {
			replicaState, settles = stateCreating, s.now().Add(s.creating)
		}
		r := &key{
			ID:                 p.ID,
			Region:             target,
			Arn:                keyArn(target, st.Account, p.ID),
			Description:        str(req.Description),
			Created:            s.now(),
			State:              replicaState,
			Settles:            settles,
			MultiRegion:        true,
			PrimaryRegion:      p.PrimaryRegion,
			Policy:             policyOrDefault(req.Policy, st.Account),
			Tags:               tags,
			RotationEnabled:    p.RotationEnabled,
			RotationPeriodDays: p.RotationPeriodDays,
			NextRotation:       p.NextRotation,
			LastOnDemand:       p.LastOnDemand,
			// Same key material, every version: ciphertexts of any related key decrypt here.
			Materials: append([]*material(nil), p.Materials...),
		}
		st.Regions[target].Keys[r.ID] = r
		return map[string]any{
			"ReplicaKeyMetadata": st.metadata(r),
			"ReplicaPolicy":      r.Policy,
			"ReplicaTags":        tagList(r.Tags),
		}, nil
	})
}

// multiRegionPrimary is the check ReplicateKey and UpdatePrimaryRegion
// share: k must be a multi-Region primary key that is not pending deletion.
func multiRegionPrimary(k *key) *apiError {
	if !k.MultiRegion {
		return errUnsupported(k.Arn + " is not a multi-Region key.")
	}
	if !k.isPrimary() {
		return errUnsupported(k.Arn + " is not a multi-Region primary key.")
	}
	return notPendingDeletion(k)
}

func opUpdatePrimaryRegion(s *Service, region string, body []byte) (any, *apiError) {
	var req updatePrimaryRegionRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	target := str(req.PrimaryRegion)
	return updateKey(s, region, str(req.KeyId), func(st *state, p *key) (any, *apiError) {
		if e := multiRegionPrimary(p); e != nil {
			return nil, e
		}
		if target == region {
			return nil, errValidation("PrimaryRegion " + target + " is already the primary Region.")
		}
		rs := st.Regions[target]
		if rs == nil || rs.Keys[p.ID] == nil {
			return nil, errNotFound("Key '" + keyArn(target, st.Account, p.ID) + "' does not exist")
		}
		// Both keys must be Enabled; both are Updating until the change is done
		// (https://docs.aws.amazon.com/kms/latest/APIReference/API_UpdatePrimaryRegion.html).
		replica := rs.Keys[p.ID]
		for _, k := range []*key{p, replica} {
			switch k.State {
			case stateEnabled:
			case stateDisabled:
				return nil, errDisabled(k.Arn + " is disabled.")
			default:
				return nil, errInvalidState(k.Arn + " is " + k.State + ".")
			}
		}
		for _, k := range st.related(p) {
			k.PrimaryRegion = target
		}
		if s.updating > 0 {
			for _, k := range []*key{p, replica} {
				k.State, k.Settles = stateUpdating, s.now().Add(s.updating)
			}
		}
		return struct{}{}, nil
	})
}

// ---- aliases ----

var aliasNameRE = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]+$`)

func validateAliasName(name string) *apiError {
	if len(name) > 256 || !aliasNameRE.MatchString(name) {
		return clientErr("InvalidAliasNameException", "Alias name "+name+" is not valid: use alias/ and letters, digits, /, _ or -.")
	}
	if strings.HasPrefix(name, "alias/aws/") {
		return clientErr("InvalidAliasNameException", "Alias names beginning with alias/aws/ are reserved for AWS managed keys.")
	}
	return nil
}

func opCreateAlias(s *Service, region string, body []byte) (any, *apiError) {
	var req aliasRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	name := str(req.AliasName)
	if e := validateAliasName(name); e != nil {
		return nil, e
	}
	return s.mutateOp(func(st *state) (any, *apiError) {
		rs := st.Regions[region]
		if rs.Aliases[name] != nil {
			return nil, clientErr("AlreadyExistsException", "An alias with the name "+aliasArn(region, st.Account, name)+" already exists")
		}
		k, e := aliasTarget(st, region, req.TargetKeyId)
		if e != nil {
			return nil, e
		}
		now := s.now()
		rs.Aliases[name] = &alias{Name: name, TargetID: k.ID, Created: now, UpdatedAt: now}
		return struct{}{}, nil
	})
}

// aliasTarget resolves the key an alias is to point to: a key ID or key ARN
// of a key that is not pending deletion.
func aliasTarget(st *state, region string, keyID *string) (*key, *apiError) {
	k, e := st.resolve(region, str(keyID), false)
	if e != nil {
		return nil, e
	}
	return k, notPendingDeletion(k)
}

func opUpdateAlias(s *Service, region string, body []byte) (any, *apiError) {
	var req aliasRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	name := str(req.AliasName)
	return s.mutateOp(func(st *state) (any, *apiError) {
		a := st.Regions[region].Aliases[name]
		if a == nil {
			return nil, errAliasNotFound(st, region, name)
		}
		k, e := aliasTarget(st, region, req.TargetKeyId)
		if e != nil {
			return nil, e
		}
		a.TargetID = k.ID
		a.UpdatedAt = s.now()
		return struct{}{}, nil
	})
}

func opDeleteAlias(s *Service, region string, body []byte) (any, *apiError) {
	var req aliasRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	name := str(req.AliasName)
	return s.mutateOp(func(st *state) (any, *apiError) {
		rs := st.Regions[region]
		if rs.Aliases[name] == nil {
			return nil, errAliasNotFound(st, region, name)
		}
		delete(rs.Aliases, name)
		return struct{}{}, nil
	})
}

func opListAliases(s *Service, region string, body []byte) (any, *apiError) {
	var req listRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	limit, e := inRange("Limit", req.Limit, 50, 1, 100)
	if e != nil {
		return nil, e
	}
	type entry struct {
		AliasName       string     `json:"AliasName"`
		AliasArn        string     `json:"AliasArn"`
		TargetKeyId     string     `json:"TargetKeyId"`
		CreationDate    *epochTime `json:"CreationDate,omitempty"`
		LastUpdatedDate *epochTime `json:"LastUpdatedDate,omitempty"`
	}
	s.mu.RLock()
	filter := ""
	if req.KeyId != nil {
		k, e := s.st.resolve(region, *req.KeyId, false)
		if e != nil {
			s.mu.RUnlock()
			return nil, e
		}
		filter = k.ID
	}
	rs := s.st.Regions[region]
	var all []entry
	var names []string
	for _, a := range rs.Aliases {
		if filter != "" && a.TargetID != filter {
			continue
		}
		all = append(all, entry{a.Name, aliasArn(region, s.st.Account, a.Name), a.TargetID, ept(a.Created), ept(a.UpdatedAt)})
	}
	s.mu.RUnlock()
	sort.Slice(all, func(i, j int) bool { return all[i].AliasName < all[j].AliasName })
	for _, a := range all {
		names = append(names, a.AliasName)
	}
	return listPage("Aliases", all, names, str(req.Marker), limit), nil
}

// ---- cryptographic operations ----

// encryptTarget is what an encryption needs from the state, copied out so
// the AES work happens outside the lock.
type encryptTarget struct {
	arn, id string
	version uint32
	m       *material
}

func (s *Service) encryptTarget(region, keyID string) (encryptTarget, *apiError) {
	return viewKey(s, region, keyID, true, func(_ *state, k *key) (encryptTarget, *apiError) {
		if e := k.usable(); e != nil {
			return encryptTarget{}, e
		}
		return encryptTarget{arn: k.Arn, id: k.ID, version: uint32(len(k.Materials) - 1), m: k.current()}, nil
	})
}

func (t encryptTarget) seal(plaintext []byte, ctx map[string]string) ([]byte, *apiError) {
	blob, err := seal(t.id, t.version, t.m, plaintext, ctx)
	if err != nil {
		return nil, errInternal(err.Error())
	}
	return blob, nil
}

// decryptSource finds the key and material a ciphertext names in this
// region. keyID, when given, must name the same key (IncorrectKeyException).
func (s *Service) decryptSource(region string, keyID *string, blob []byte) (ciphertextHeader, *key, *material, *apiError) {
	if len(blob) == 0 || len(blob) > maxCiphertext {
		return ciphertextHeader{}, nil, nil, errValidation("CiphertextBlob must be 1 to 6144 bytes long.")
	}
	h, ok := parseCiphertext(blob)
	s.mu.RLock()
	defer s.mu.RUnlock()
	var want *key
	if keyID != nil {
		k, e := s.st.resolve(region, *keyID, true)
		if e != nil {
			return h, nil, nil, e
		}
		want = k
	}
	if !ok {
		return h, nil, nil, errInvalidCiphertext()
	}
	if want != nil && want.ID != h.keyID {
		return h, nil, nil, clientErr("IncorrectKeyException",
			"The key ID in the request does not identify a KMS key that can perform this operation.")
	}
	// Only a key with the ciphertext's key ID in this region can decrypt it:
	// the key itself or a related multi-Region key.
	k := s.st.Regions[region].Keys[h.keyID]
	if k == nil {
		return h, nil, nil, errInvalidCiphertext()
	}
	if e := k.usable(); e != nil {
		return h, nil, nil, e
	}
	if int(h.version) >= len(k.Materials) {
		return h, nil, nil, errInvalidCiphertext()
	}
	// Copy what is used after the lock is released.
	kc := &key{ID: k.ID, Arn: k.Arn}
	return h, kc, k.Materials[h.version], nil
}

func checkAlgorithm(alg string) *apiError {
	if alg != "" && alg != "SYMMETRIC_DEFAULT" {
		return clientErr("InvalidKeyUsageException", "EncryptionAlgorithm "+alg+" is not valid for a SYMMETRIC_DEFAULT key.")
	}
	return nil
}

func dryRun(p *bool) *apiError {
	if p != nil && *p {
		return &apiError{status: 412, code: "DryRunOperationException",
			msg: "The request would have succeeded, but the DryRun option is set."}
	}
	return nil
}

func recipientUnsupported(r json.RawMessage) *apiError {
	if len(r) > 0 && string(r) != "null" {
		return errUnsupported("The KMS stand-in does not support Recipient (Nitro Enclaves attestation).")
	}
	return nil
}

func opEncrypt(s *Service, region string, body []byte) (any, *apiError) {
	var req encryptRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if len(req.Plaintext) == 0 || len(req.Plaintext) > maxPlaintext {
		return nil, errValidation("Plaintext must be 1 to 4096 bytes long.")
	}
	if e := checkAlgorithm(req.EncryptionAlgorithm); e != nil {
		return nil, e
	}
	t, e := s.encryptTarget(region, str(req.KeyId))
	if e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	blob, e := t.seal(req.Plaintext, req.EncryptionContext)
	if e != nil {
		return nil, e
	}
	return map[string]any{"CiphertextBlob": blob, "KeyId": t.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, nil
}

func dataKeySize(spec string, n *int32) (int, *apiError) {
	switch {
	case spec != "" && n != nil:
		return 0, errValidation("Please specify either number of bytes or key spec, not both.")
	case n != nil:
		if *n < 1 || *n > maxDataKeyBytes {
			return 0, errValidation("NumberOfBytes must be 1 to 1024.")
		}
		return int(*n), nil
	case spec == "AES_256":
		return 32, nil
	case spec == "AES_128":
		return 16, nil
	case spec == "":
		return 0, errValidation("Please specify either number of bytes or key spec.")
	default:
		return 0, errValidation("KeySpec " + spec + " is not valid: use AES_256 or AES_128.")
	}
}

func generateDataKey(s *Service, region string, body []byte, withPlaintext bool) (any, *apiError) {
	var req generateDataKeyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	n, e := dataKeySize(req.KeySpec, req.NumberOfBytes)
	if e != nil {
		return nil, e
	}
	if e := recipientUnsupported(req.Recipient); e != nil {
		return nil, e
	}
	t, e := s.encryptTarget(region, str(req.KeyId))
	if e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	dk := make([]byte, n)
	if _, err := rand.Read(dk); err != nil {
		return nil, errInternal(err.Error())
	}
	blob, e := t.seal(dk, req.EncryptionContext)
	if e != nil {
		return nil, e
	}
	out := map[string]any{"CiphertextBlob": blob, "KeyId": t.arn, "KeyMaterialId": t.m.ID}
	if withPlaintext {
		out["Plaintext"] = dk
	}
	return out, nil
}

func opGenerateDataKey(s *Service, region string, body []byte) (any, *apiError) {
	return generateDataKey(s, region, body, true)
}

func opGenerateDataKeyWithoutPlaintext(s *Service, region string, body []byte) (any, *apiError) {
	return generateDataKey(s, region, body, false)
}

func opDecrypt(s *Service, region string, body []byte) (any, *apiError) {
	var req decryptRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := checkAlgorithm(req.EncryptionAlgorithm); e != nil {
		return nil, e
	}
	if e := recipientUnsupported(req.Recipient); e != nil {
		return nil, e
	}
	h, k, m, e := s.decryptSource(region, req.KeyId, req.CiphertextBlob)
	if e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	pt, ok := open(h, req.CiphertextBlob, m, req.EncryptionContext)
	if !ok {
		return nil, errInvalidCiphertext()
	}
	return map[string]any{"Plaintext": pt, "KeyId": k.Arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT", "KeyMaterialId": m.ID}, nil
}

func opReEncrypt(s *Service, region string, body []byte) (any, *apiError) {
	var req reEncryptRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := checkAlgorithm(req.SourceEncryptionAlgorithm); e != nil {
		return nil, e
	}
	if e := checkAlgorithm(req.DestinationEncryptionAlgorithm); e != nil {
		return nil, e
	}
	h, src, sm, e := s.decryptSource(region, req.SourceKeyId, req.CiphertextBlob)
	if e != nil {
		return nil, e
	}
	dst, e := s.encryptTarget(region, str(req.DestinationKeyId))
	if e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	pt, ok := open(h, req.CiphertextBlob, sm, req.SourceEncryptionContext)
	if !ok {
		return nil, errInvalidCiphertext()
	}
	blob, e := dst.seal(pt, req.DestinationEncryptionContext)
	clear(pt)
	if e != nil {
		return nil, e
	}
	return map[string]any{
		"CiphertextBlob":                 blob,
		"SourceKeyId":                    src.Arn,
		"KeyId":                          dst.arn,
		"SourceEncryptionAlgorithm":      "SYMMETRIC_DEFAULT",
		"DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
		"SourceKeyMaterialId":            sm.ID,
		"DestinationKeyMaterialId":       dst.m.ID,
	}, nil
}

func opGenerateRandom(s *Service, region string, body []byte) (any, *apiError) {
	var req generateRandomRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if req.NumberOfBytes == nil || *req.NumberOfBytes < 1 || *req.NumberOfBytes > maxDataKeyBytes {
		return nil, errValidation("NumberOfBytes must be 1 to 1024.")
	}
	b := make([]byte, *req.NumberOfBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, errInternal(err.Error())
	}
	return map[string]any{"Plaintext": b}, nil
}

// ---- key state ----

func opEnableKey(s *Service, region string, body []byte) (any, *apiError) {
	return setKeyState(s, region, body, stateEnabled)
}

func opDisableKey(s *Service, region string, body []byte) (any, *apiError) {
	return setKeyState(s, region, body, stateDisabled)
}

// setKeyState is EnableKey and DisableKey; neither applies to a key pending deletion.
func setKeyState(s *Service, region string, body []byte, to string) (any, *apiError) {
	return updateKeyOp(s, region, body, func(_ *state, k *key) (any, *apiError) {
		if e := notPendingDeletion(k); e != nil {
			return nil, e
		}
		if k.State == stateCreating || k.State == stateUpdating {
			return nil, errInvalidState(k.Arn + " is " + k.State + ".")
		}
		k.State = to
		return struct{}{}, nil
	})
}

func opScheduleKeyDeletion(s *Service, region string, body []byte) (any, *apiError) {
	var req scheduleKeyDeletionRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	days, e := inRange("PendingWindowInDays", req.PendingWindowInDays, defaultPendingDays, minPendingDays, maxPendingDays)
	if e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(st *state, k *key) (any, *apiError) {
		if e := notPendingDeletion(k); e != nil {
			return nil, e
		}
		k.PendingWindowDays = days
		out := map[string]any{"KeyId": k.Arn, "PendingWindowInDays": days}
		if k.MultiRegion && k.isPrimary() && len(st.related(k)) > 1 {
			// A primary outlives its replicas: its waiting period starts
			// when the last replica is deleted (ScheduleKeyDeletion, API reference).
			k.State = statePendingReplicaDeletion
			k.DeletionDate = time.Time{}
		} else {
			k.State = statePendingDeletion
			k.DeletionDate = s.now().AddDate(0, 0, int(days))
			out["DeletionDate"] = ept(k.DeletionDate)
		}
		out["KeyState"] = k.State
		return out, nil
	})
}

func opCancelKeyDeletion(s *Service, region string, body []byte) (any, *apiError) {
	return updateKeyOp(s, region, body, func(_ *state, k *key) (any, *apiError) {
		if !k.pendingDeletion() {
			return nil, errInvalidState(k.Arn + " is not pending deletion.")
		}
		// AWS leaves a key whose deletion is cancelled Disabled.
		k.State = stateDisabled
		k.DeletionDate = time.Time{}
		k.PendingWindowDays = 0
		return map[string]any{"KeyId": k.Arn}, nil
	})
}

// ---- rotation ----

// rotationManageable is the check EnableKeyRotation, DisableKeyRotation and
// RotateKeyOnDemand share: rotation of related multi-Region keys is managed
// on the primary, and the key must be enabled.
func rotationManageable(k *key) *apiError {
	if !k.isPrimary() {
		return errUnsupported(k.Arn + " is a multi-Region replica key; manage rotation on its primary key in " + k.PrimaryRegion + ".")
	}
	return k.usable()
}

func opEnableKeyRotation(s *Service, region string, body []byte) (any, *apiError) {
	var req enableKeyRotationRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	period, e := inRange("RotationPeriodInDays", req.RotationPeriodInDays, defaultRotationDays, minRotationDays, maxRotationDays)
	if e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(st *state, k *key) (any, *apiError) {
		if e := rotationManageable(k); e != nil {
			return nil, e
		}
		next := s.now().AddDate(0, 0, int(period))
		// Rotation status is a shared property of related multi-Region keys.
		for _, r := range st.related(k) {
			r.RotationEnabled = true
			r.RotationPeriodDays = period
			r.NextRotation = next
		}
		return struct{}{}, nil
	})
}

func opDisableKeyRotation(s *Service, region string, body []byte) (any, *apiError) {
	return updateKeyOp(s, region, body, func(st *state, k *key) (any, *apiError) {
		if e := rotationManageable(k); e != nil {
			return nil, e
		}
		for _, r := range st.related(k) {
			r.RotationEnabled = false
			r.RotationPeriodDays = 0
			r.NextRotation = time.Time{}
		}
		return struct{}{}, nil
	})
}

func opGetKeyRotationStatus(s *Service, region string, body []byte) (any, *apiError) {
	return viewKeyOp(s, region, body, func(_ *state, k *key) (any, *apiError) {
		// While a key is pending deletion its rotation status reads false; it
		// comes back if the deletion is cancelled (GetKeyRotationStatus, API reference).
		enabled := k.RotationEnabled && !k.pendingDeletion()
		out := map[string]any{"KeyId": k.Arn, "KeyRotationEnabled": enabled}
		if enabled {
			out["RotationPeriodInDays"] = k.RotationPeriodDays
			out["NextRotationDate"] = ept(k.NextRotation)
		}
		// OnDemandRotationStartDate names an on-demand rotation in progress
		// (https://docs.aws.amazon.com/kms/latest/APIReference/API_GetKeyRotationStatus.html);
		// the stand-in's rotations complete at once, so it is never shown.
		return out, nil
	})
}

// rotate adds a new material version to k and every related key, so
// replicas keep sharing all material with their primary. Caller holds mu.
func rotate(st *state, k *key, now time.Time, rotationType string) *apiError {
	m, err := newMaterial(now, rotationType)
	if err != nil {
		return errInternal(err.Error())
	}
	for _, r := range st.related(k) {
		r.Materials = append(r.Materials, m)
		if rotationType == "ON_DEMAND" {
			r.LastOnDemand = now
		}
	}
	return nil
}

func opRotateKeyOnDemand(s *Service, region string, body []byte) (any, *apiError) {
	return updateKeyOp(s, region, body, func(st *state, k *key) (any, *apiError) {
		if e := rotationManageable(k); e != nil {
			return nil, e
		}
		n := 0
		for _, m := range k.Materials {
			if m.RotationType == "ON_DEMAND" {
				n++
			}
		}
		if n >= maxOnDemandRotation {
			return nil, clientErr("LimitExceededException", fmt.Sprintf("%s has reached the limit of %d on-demand rotations.", k.Arn, maxOnDemandRotation))
		}
		if e := rotate(st, k, s.now(), "ON_DEMAND"); e != nil {
			return nil, e
		}
		return map[string]any{"KeyId": k.ID}, nil
	})
}

func opListKeyRotations(s *Service, region string, body []byte) (any, *apiError) {
	var req struct {
		listRequest
		IncludeKeyMaterial string `json:"IncludeKeyMaterial"`
	}
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	limit, e := inRange("Limit", req.Limit, 100, 1, 1000)
	if e != nil {
		return nil, e
	}
	type entry struct {
		KeyId            string     `json:"KeyId"`
		KeyMaterialId    string     `json:"KeyMaterialId"`
		KeyMaterialState string     `json:"KeyMaterialState"`
		RotationDate     *epochTime `json:"RotationDate,omitempty"`
		RotationType     string     `json:"RotationType,omitempty"`
	}
	src, e := viewKey(s, region, str(req.KeyId), false, func(_ *state, k *key) (*key, *apiError) {
		// Copy what is used after the lock is released.
		return &key{ID: k.ID, Materials: append([]*material(nil), k.Materials...)}, nil
	})
	if e != nil {
		return nil, e
	}
	mats := src.Materials
	var all []entry
	var names []string
	for i, m := range mats {
		if i == 0 && req.IncludeKeyMaterial != "ALL_KEY_MATERIAL" {
			continue // ROTATIONS_ONLY, the default, omits the original material
		}
		state := "NON_CURRENT"
		if i == len(mats)-1 {
			state = "CURRENT"
		}
		e := entry{KeyId: src.ID, KeyMaterialId: m.ID, KeyMaterialState: state, RotationType: m.RotationType}
		if m.RotationType != "" {
			e.RotationDate = ept(m.Created)
		}
		all = append(all, e)
		names = append(names, fmt.Sprintf("%08d", i))
	}
	return listPage("Rotations", all, names, str(req.Marker), limit), nil
}

// ---- policies, tags, description ----

func opGetKeyPolicy(s *Service, region string, body []byte) (any, *apiError) {
	var req keyPolicyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := checkPolicyName(req.PolicyName); e != nil {
		return nil, e
	}
	return viewKey(s, region, str(req.KeyId), false, func(_ *state, k *key) (any, *apiError) {
		return map[string]any{"Policy": k.Policy, "PolicyName": "default"}, nil
	})
}

func opPutKeyPolicy(s *Service, region string, body []byte) (any, *apiError) {
	var req keyPolicyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := checkPolicyName(req.PolicyName); e != nil {
		return nil, e
	}
	if req.Policy == nil {
		return nil, errValidation("Policy is required.")
	}
	if e := validatePolicy(req.Policy); e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(_ *state, k *key) (any, *apiError) {
		k.Policy = *req.Policy
		return struct{}{}, nil
	})
}

func opListKeyPolicies(s *Service, region string, body []byte) (any, *apiError) {
	return viewKeyOp(s, region, body, func(*state, *key) (any, *apiError) {
		return map[string]any{"PolicyNames": []string{"default"}, "Truncated": false}, nil
	})
}

func opTagResource(s *Service, region string, body []byte) (any, *apiError) {
	var req tagResourceRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	tags, e := validateTags(req.Tags)
	if e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(_ *state, k *key) (any, *apiError) {
		if e := notPendingDeletion(k); e != nil {
			return nil, e
		}
		if k.Tags == nil {
			k.Tags = map[string]string{}
		}
		for tk, tv := range tags {
			k.Tags[tk] = tv
		}
		return struct{}{}, nil
	})
}

func opUntagResource(s *Service, region string, body []byte) (any, *apiError) {
	var req tagResourceRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(_ *state, k *key) (any, *apiError) {
		if e := notPendingDeletion(k); e != nil {
			return nil, e
		}
		for _, tk := range req.TagKeys {
			delete(k.Tags, tk)
		}
		return struct{}{}, nil
	})
}

func opListResourceTags(s *Service, region string, body []byte) (any, *apiError) {
	return viewKeyOp(s, region, body, func(_ *state, k *key) (any, *apiError) {
		return map[string]any{"Tags": tagList(k.Tags), "Truncated": false}, nil
	})
}

func opUpdateKeyDescription(s *Service, region string, body []byte) (any, *apiError) {
	var req updateKeyDescriptionRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := validateDescription(req.Description); e != nil {
		return nil, e
	}
	return updateKey(s, region, str(req.KeyId), func(_ *state, k *key) (any, *apiError) {
		if e := notPendingDeletion(k); e != nil {
			return nil, e
		}
		k.Description = str(req.Description)
		return struct{}{}, nil
	})
}

// ---- validation and paging helpers ----

func validateDescription(d *string) *apiError {
	if d != nil && len(*d) > 8192 {
		return errValidation("Description must be at most 8192 characters.")
	}
	return nil
}

// validatePolicy checks a key policy is a policy document (at most 32 KiB, as the PutKeyPolicy
// reference allows) that the stand-in can evaluate exactly as AWS would (iampolicy.Validate):
// every statement has a Principal (NotPrincipal only with Deny) and no condition operator it
// cannot evaluate. Anything else is MalformedPolicyDocumentException naming the problem, never
// a policy stored and then half ignored.
func validatePolicy(p *string) *apiError {
	if p == nil {
		return nil
	}
	if len(*p) > 32768 {
		return clientErr("MalformedPolicyDocumentException", "The new key policy is longer than 32768 characters.")
	}
	doc, err := policy.Parse([]byte(*p))
	if err == nil {
		err = iampolicy.Validate(doc, iampolicy.Resource)
	}
	if err != nil {
		return clientErr("MalformedPolicyDocumentException", "The new key policy is not a policy document the stand-in can evaluate: "+err.Error())
	}
	return nil
}

func policyOrDefault(p *string, account string) string {
	if p != nil {
		return *p
	}
	return defaultPolicy(account)
}

func checkPolicyName(name *string) *apiError {
	if name != nil && *name != "default" {
		return errNotFound("No such policy exists: the only key policy name is \"default\".")
	}
	return nil
}

func validateTags(tags []tag) (map[string]string, *apiError) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(tags))
	for _, t := range tags {
		if len(t.TagKey) < 1 || len(t.TagKey) > 128 || len(t.TagValue) > 256 {
			return nil, clientErr("TagException", "Tag keys must be 1 to 128 and values 0 to 256 characters.")
		}
		if strings.HasPrefix(t.TagKey, "aws:") {
			return nil, clientErr("TagException", "Tag keys beginning with aws: are reserved.")
		}
		out[t.TagKey] = t.TagValue
	}
	return out, nil
}

func tagList(tags map[string]string) []tag {
	out := make([]tag, 0, len(tags))
	for k, v := range tags {
		out = append(out, tag{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TagKey < out[j].TagKey })
	return out
}

// inRange is an optional integer member: def when absent, else a value from
// lo to hi.
func inRange(member string, p *int32, def, lo, hi int32) (int32, *apiError) {
	if p == nil {
		return def, nil
	}
	if *p < lo || *p > hi {
		return 0, errValidation(fmt.Sprintf("%s must be %d to %d.", member, lo, hi))
	}
	return *p, nil
}

// page selects names[from:to] after marker (the last name of the previous
// page; names are sorted) and returns the marker of the next page, if any.
func page(names []string, marker string, limit int) (from, to int, next string) {
	if marker != "" {
		from = sort.SearchStrings(names, marker)
		if from < len(names) && names[from] == marker {
			from++
		}
	}
	to = min(from+limit, len(names))
	if to < len(names) {
		next = names[to-1]
	}
	return from, to, next
}

// listPage is a List operation's answer: the page of all (whose entries
// names names) after marker, under field, with Truncated and NextMarker.
func listPage[T any](field string, all []T, names []string, marker string, limit int32) map[string]any {
	from, to, next := page(names, marker, int(limit))
	out := map[string]any{field: append([]T{}, all[from:to]...), "Truncated": next != ""}
	if next != "" {
		out["NextMarker"] = next
	}
	return out
}
