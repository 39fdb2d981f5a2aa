package kms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Key states, as named in the KMS API reference (KeyMetadata.KeyState).
const (
	stateEnabled                = "Enabled"
	stateDisabled               = "Disabled"
	statePendingDeletion        = "PendingDeletion"
	statePendingReplicaDeletion = "PendingReplicaDeletion"
	// stateCreating: a new replica, until ReplicateKey's asynchronous creation is done.
	stateCreating = "Creating"
	// stateUpdating: both keys of an UpdatePrimaryRegion, until the change is done.
	stateUpdating = "Updating"
)

// material is one key material version. It is immutable once made, so a
// *material can be shared between a primary and its replicas and used
// outside the state lock.
type material struct {
	ID      string    `json:"id"` // KeyMaterialId: 64 hex characters, like AWS
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
	// RotationType is "" for the original material, else AUTOMATIC or ON_DEMAND.
	RotationType string `json:"rotation_type,omitempty"`

	aead cipher.AEAD
}

func newMaterial(now time.Time, rotationType string) (*material, error) {
	m := &material{Key: make([]byte, 32), Created: now, RotationType: rotationType}
	if _, err := rand.Read(m.Key); err != nil {
		return nil, err
	}
	// The ID is derived from the material so replicas and restarts agree on it
	// without storing anything else; a hash does not reveal the material.
	sum := sha256.Sum256(append([]byte("envdr-localaws-kms-material-id:"), m.Key...))
	m.ID = hex.EncodeToString(sum[:])
	return m, m.init()
}

func (m *material) init() error {
	if len(m.Key) != 32 {
		return fmt.Errorf("key material %s: want 32 bytes, have %d", m.ID, len(m.Key))
	}
	block, err := aes.NewCipher(m.Key)
	if err != nil {
		return err
	}
	m.aead, err = cipher.NewGCM(block)
	return err
}

// key is one KMS key in one region. Multi-Region keys are one key per region
// with the same ID; PrimaryRegion tells which of them is the primary.
type key struct {
	ID                 string            `json:"id"`
	Region             string            `json:"region"`
	Arn                string            `json:"arn"`
	Description        string            `json:"description"`
	Created            time.Time         `json:"created"`
	State              string            `json:"state"`
	DeletionDate       time.Time         `json:"deletion_date,omitzero"`
	PendingWindowDays  int32             `json:"pending_window_days,omitempty"`
	MultiRegion        bool              `json:"multi_region,omitempty"`
	PrimaryRegion      string            `json:"primary_region,omitempty"`
	Policy             string            `json:"policy"`
	Tags               map[string]string `json:"tags,omitempty"`
	RotationEnabled    bool              `json:"rotation_enabled,omitempty"`
	RotationPeriodDays int32             `json:"rotation_period_days,omitempty"`
	NextRotation       time.Time         `json:"next_rotation,omitzero"`
	LastOnDemand       time.Time         `json:"last_on_demand,omitzero"`
	// Grants on this key in this Region.
	Grants []*grant `json:"grants,omitempty"`
	// Settles is when a Creating or Updating key becomes Enabled.
	Settles   time.Time   `json:"settles,omitzero"`
	Materials []*material `json:"materials"`
}

func (k *key) isPrimary() bool { return !k.MultiRegion || k.PrimaryRegion == k.Region }

func (k *key) current() *material { return k.Materials[len(k.Materials)-1] }

// usable reports the error AWS gives for a cryptographic operation in the
// key's state (KMS developer guide, "Key states of KMS keys").
func (k *key) usable() *apiError {
	switch k.State {
	case stateEnabled, stateUpdating:
		// "While the key state is Updating, you can use the keys in cryptographic
		// operations" (https://docs.aws.amazon.com/kms/latest/APIReference/API_UpdatePrimaryRegion.html).
		return nil
	case stateDisabled:
		return errDisabled(k.Arn + " is disabled.")
	case statePendingDeletion, statePendingReplicaDeletion:
		return errInvalidState(k.Arn + " is pending deletion.")
	default:
		return errInvalidState(k.Arn + " is " + k.State + ".")
	}
}

func (k *key) pendingDeletion() bool {
	return k.State == statePendingDeletion || k.State == statePendingReplicaDeletion
}

type alias struct {
	Name      string    `json:"name"`
	TargetID  string    `json:"target"`
	Created   time.Time `json:"created"`
	UpdatedAt time.Time `json:"updated"`
}

type regionState struct {
	Keys    map[string]*key   `json:"keys"`
	Aliases map[string]*alias `json:"aliases"`
}

func newRegionState() *regionState {
	return &regionState{Keys: map[string]*key{}, Aliases: map[string]*alias{}}
}

// state is everything the service persists.
type state struct {
	Version int                     `json:"version"`
	Account string                  `json:"account"`
	Regions map[string]*regionState `json:"regions"`
}

const stateVersion = 1

func keyArn(region, account, id string) string {
	return "arn:aws:kms:" + region + ":" + account + ":key/" + id
}

func aliasArn(region, account, name string) string {
	return "arn:aws:kms:" + region + ":" + account + ":" + name
}

func errAliasNotFound(st *state, region, name string) *apiError {
	return errNotFound("Alias " + aliasArn(region, st.Account, name) + " is not found.")
}

// resolve finds the key a KeyId names in region: a key ID, key ARN, and
// (where the operation accepts them, allowAlias) an alias name or alias ARN.
// Caller holds s.mu (read or write).
func (st *state) resolve(region, id string, allowAlias bool) (*key, *apiError) {
	rs := st.Regions[region]
	if id == "" {
		return nil, errValidation("KeyId is required.")
	}
	resource := id
	if strings.HasPrefix(id, "arn:") {
		// arn:PARTITION:kms:REGION:ACCOUNT:RESOURCE
		parts := strings.SplitN(id, ":", 6)
		if len(parts) != 6 || parts[2] != "kms" || parts[5] == "" {
			return nil, errNotFound("Invalid arn " + id)
		}
		if parts[3] != region {
			// What AWS answers for another region's ARN: the key is looked up
			// in this region only.
			return nil, errNotFound("Invalid arn " + parts[3])
		}
		if parts[4] != st.Account {
			return nil, errNotFound("Key '" + id + "' does not exist")
		}
		resource = parts[5]
		switch {
		case strings.HasPrefix(resource, "key/"):
			resource = strings.TrimPrefix(resource, "key/")
		case strings.HasPrefix(resource, "alias/"):
		default:
			return nil, errNotFound("Invalid arn " + id)
		}
	}
	if strings.HasPrefix(resource, "alias/") {
		if !allowAlias {
			return nil, errNotFound("Invalid keyId " + id)
		}
		a := rs.Aliases[resource]
		if a == nil {
			return nil, errAliasNotFound(st, region, resource)
		}
		k := rs.Keys[a.TargetID]
		if k == nil {
			return nil, errAliasNotFound(st, region, resource)
		}
		return k, nil
	}
	k := rs.Keys[resource]
	if k == nil {
		if !validKeyID(resource) {
			return nil, errNotFound("Invalid keyId " + id)
		}
		return nil, errNotFound("Key '" + keyArn(region, st.Account, resource) + "' does not exist")
	}
	return k, nil
}

func validKeyID(id string) bool {
	if rest, ok := strings.CutPrefix(id, "mrk-"); ok {
		return len(rest) == 32 && isHex(rest)
	}
	if len(id) != 36 {
		return false
	}
	for i, c := range id {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !isHex(string(c)) {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func newKeyID(multiRegion bool) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	if multiRegion {
		return "mrk-" + hex.EncodeToString(b[:]), nil
	}
	b[6] = b[6]&0x0f | 0x40 // UUID v4, like AWS single-Region key IDs
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// related returns every key (primary and replicas, any region) sharing a
// multi-Region key's ID, sorted by region. Caller holds s.mu.
func (st *state) related(k *key) []*key {
	if !k.MultiRegion {
		return []*key{k}
	}
	var out []*key
	for _, rs := range st.Regions {
		if r := rs.Keys[k.ID]; r != nil && r.MultiRegion {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

func (st *state) metadata(k *key) keyMetadata {
	md := keyMetadata{
		AWSAccountId:          st.Account,
		KeyId:                 k.ID,
		Arn:                   k.Arn,
		CreationDate:          ept(k.Created),
		Enabled:               k.State == stateEnabled,
		Description:           k.Description,
		KeyUsage:              "ENCRYPT_DECRYPT",
		KeyState:              k.State,
		DeletionDate:          ept(k.DeletionDate),
		Origin:                "AWS_KMS",
		KeyManager:            "CUSTOMER",
		CustomerMasterKeySpec: "SYMMETRIC_DEFAULT",
		KeySpec:               "SYMMETRIC_DEFAULT",
		EncryptionAlgorithms:  []string{"SYMMETRIC_DEFAULT"},
		MultiRegion:           k.MultiRegion,
		CurrentKeyMaterialId:  k.current().ID,
	}
	// "present only when the KeyState of the KMS key is PendingReplicaDeletion"
	// (https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html).
	if k.State == statePendingReplicaDeletion && k.PendingWindowDays > 0 {
		w := k.PendingWindowDays
		md.PendingDeletionWindowInDays = &w
	}
	if k.MultiRegion {
		cfg := &multiRegionConfiguration{MultiRegionKeyType: "REPLICA", ReplicaKeys: []multiRegionKey{}}
		if k.isPrimary() {
			cfg.MultiRegionKeyType = "PRIMARY"
		}
		for _, r := range st.related(k) {
			e := multiRegionKey{Arn: r.Arn, Region: r.Region}
			if r.isPrimary() {
				cfg.PrimaryKey = &e
			} else {
				cfg.ReplicaKeys = append(cfg.ReplicaKeys, e)
			}
		}
		md.MultiRegionConfiguration = cfg
	}
	return md
}

func defaultPolicy(account string) string {
	return `{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {
      "AWS" : "arn:aws:iam::` + account + `:root"
    },
    "Action" : "kms:*",
    "Resource" : "*"
  } ]
}`
}
