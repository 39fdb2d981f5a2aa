// Package kms is envdr's local, multi-Region stand-in for AWS KMS.
//
// It speaks the AWS JSON 1.1 wire protocol of the KMS API (TrentService), so
// the unmodified aws-sdk-go-v2 KMS client works against it, with one
// http.Handler per region endpoint. It models what envdr relies on: symmetric
// keys, multi-Region primary and replica keys sharing key material, aliases, grants,
// key states, rotation, key policies and ciphertexts
// bound to their key and encryption context. Test hooks add a per-region
// request-rate limit and per-region, per-operation call counters. State is
// kept in one JSON file in Options.Dir so it survives restarts.
//
// With Options.Authorizer, every operation of an authenticated request is authorized against
// the key policy and the caller's identity policies (package iam verifies the signatures in
// front of it). It does not support asymmetric, HMAC, imported-material or custom-key-store
// keys.
package kms

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultAccount is the account ID keys belong to when Options.Account is empty.
const DefaultAccount = "111122223333"

// Defaults of Options.ReplicaCreating and Options.Updating.
const (
	DefaultReplicaCreating = 2 * time.Second
	DefaultUpdating        = time.Second
)

// ThrottleMessage is the ThrottlingException message KMS gives
// (https://docs.aws.amazon.com/kms/latest/developerguide/throttling.html).
const ThrottleMessage = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."

// Request quota classes: the cryptographic operations share one quota per Region, the
// management operations have their own
// (https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html).
const (
	ClassCryptographic = "cryptographic"
	ClassManagement    = "management"
)

// cryptographicOps are the operations counted against the cryptographic quota.
var cryptographicOps = map[string]bool{
	"Encrypt": true, "Decrypt": true, "ReEncrypt": true, "GenerateDataKey": true,
	"GenerateDataKeyWithoutPlaintext": true, "GenerateDataKeyPair": true,
	"GenerateDataKeyPairWithoutPlaintext": true, "GenerateRandom": true,
}

// OperationClass is the quota class of an operation.
func OperationClass(op string) string {
	if cryptographicOps[op] {
		return ClassCryptographic
	}
	return ClassManagement
}

// stateFile is the name of the persisted state in Options.Dir.
const stateFile = "kms-state.json"

// maxBody bounds a request body; KMS requests are small (plaintexts ≤ 4 KiB).
const maxBody = 1 << 20

// Options configures a Service.
type Options struct {
	// Dir holds the persisted state; "" keeps everything in memory.
	Dir string
	// Account is the AWS account ID in key and alias ARNs (default DefaultAccount).
	Account string
	// Regions are created up front and are the only valid ReplicaRegion values.
	// When empty, any well-formed region name is accepted and created on first use.
	Regions []string
	// ReplicaCreating is how long a new replica stays Creating after ReplicateKey (AWS
	// creates it asynchronously): 0 means DefaultReplicaCreating, negative none.
	ReplicaCreating time.Duration
	// Updating is how long both keys of an UpdatePrimaryRegion stay Updating: 0 means
	// DefaultUpdating, negative none.
	Updating time.Duration
	// Authorizer evaluates the key policy and the caller's identity policies on every
	// operation of an authenticated request; nil authorizes everything.
	Authorizer Authorizer
}

// Service is the KMS stand-in for all regions. It is safe for concurrent use.
type Service struct {
	account string
	dir     string
	fixed   bool // Options.Regions was given: regions are a closed set
	// skew is added to the wall clock; tests advance it to reach deletion
	// dates and rotation times without waiting days.
	skew atomic.Int64

	mu sync.RWMutex
	st *state
	// nextDue is when housekeeping is next due (unix nanos, 0 = never), read
	// without the lock so requests take the write lock only when it is due.
	nextDue atomic.Int64

	persistMu sync.Mutex
	gen       uint64 // bumped under mu on every mutation
	written   uint64 // newest generation on disk, under persistMu

	limMu    sync.RWMutex
	limiters map[string]*rate.Limiter

	cntMu    sync.Mutex
	counters map[string]map[string]int64

	closed atomic.Bool

	authz              Authorizer
	creating, updating time.Duration
}

var regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// NewService returns a Service, loading its state from opts.Dir if present.
func NewService(opts Options) (*Service, error) {
	s := &Service{
		account:  opts.Account,
		dir:      opts.Dir,
		fixed:    len(opts.Regions) > 0,
		limiters: map[string]*rate.Limiter{},
		counters: map[string]map[string]int64{},
		authz:    opts.Authorizer,
		creating: settleTime(opts.ReplicaCreating, DefaultReplicaCreating),
		updating: settleTime(opts.Updating, DefaultUpdating),
	}
	if s.account == "" {
		s.account = DefaultAccount
	}
	s.st = &state{Version: stateVersion, Account: s.account, Regions: map[string]*regionState{}}
	if s.dir != "" {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("kms stand-in: state dir: %w", err)
		}
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	for _, r := range opts.Regions {
		if !regionRE.MatchString(r) {
			return nil, fmt.Errorf("kms stand-in: invalid region %q", r)
		}
		if s.st.Regions[r] == nil {
			s.st.Regions[r] = newRegionState()
		}
	}
	s.updateNextDue()
	return s, nil
}

func settleTime(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (s *Service) load() error {
	path := filepath.Join(s.dir, stateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kms stand-in: read %s: %w", path, err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("kms stand-in: parse %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("kms stand-in: %s has state version %d, want %d", path, st.Version, stateVersion)
	}
	if st.Account != s.account {
		return fmt.Errorf("kms stand-in: %s belongs to account %s, not %s", path, st.Account, s.account)
	}
	if st.Regions == nil {
		st.Regions = map[string]*regionState{}
	}
	// Replicas share material with their primary; share the *material too so
	// memory matches a freshly built state.
	byID := map[string]*material{}
	for name, rs := range st.Regions {
		if rs.Keys == nil {
			rs.Keys = map[string]*key{}
		}
		if rs.Aliases == nil {
			rs.Aliases = map[string]*alias{}
		}
		for id, k := range rs.Keys {
			if k == nil || k.ID != id || k.Region != name || len(k.Materials) == 0 {
				return fmt.Errorf("kms stand-in: %s: malformed key %s in %s", path, id, name)
			}
			for i, m := range k.Materials {
				if prev := byID[m.ID]; prev != nil {
					k.Materials[i] = prev
					continue
				}
				if err := m.init(); err != nil {
					return fmt.Errorf("kms stand-in: %s: key %s: %w", path, id, err)
				}
				byID[m.ID] = m
			}
		}
	}
	s.st = &st
	return nil
}

// mutate runs fn under the write lock and, if it succeeds, persists the new
// state. Snapshots are taken under the lock and written outside it; a
// generation number keeps an older snapshot from overwriting a newer one.
func (s *Service) mutate(fn func(st *state) *apiError) *apiError {
	s.mu.Lock()
	if e := fn(s.st); e != nil {
		s.mu.Unlock()
		return e
	}
	s.updateNextDue()
	if s.dir == "" {
		s.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(s.st)
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	if err != nil {
		return errInternal("persist state: " + err.Error())
	}
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	if gen <= s.written {
		return nil
	}
	if err := writeAtomic(filepath.Join(s.dir, stateFile), data); err != nil {
		return errInternal("persist state: " + err.Error())
	}
	s.written = gen
	return nil
}

// writeAtomic replaces path with data so a crash leaves the old or the new
// file, never a torn one. The file holds key material: 0600.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".kms-state-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// updateNextDue recomputes when housekeeping is next due: the earliest
// deletion date or automatic rotation. Caller holds mu (write) or owns s.
func (s *Service) updateNextDue() {
	var next int64
	due := func(t time.Time) {
		if n := t.UnixNano(); next == 0 || n < next {
			next = n
		}
	}
	for _, rs := range s.st.Regions {
		for _, k := range rs.Keys {
			if k.State == statePendingDeletion && !k.DeletionDate.IsZero() {
				due(k.DeletionDate)
			}
			if k.RotationEnabled && k.isPrimary() && k.State == stateEnabled && !k.NextRotation.IsZero() {
				due(k.NextRotation)
			}
			if !k.Settles.IsZero() {
				due(k.Settles)
			}
		}
	}
	s.nextDue.Store(next)
}

// housekeeping does what KMS does on its own schedule, lazily on the next
// request: it deletes keys whose waiting period has ended, with their
// aliases, and rotates keys whose automatic rotation is due. A primary
// waiting for its replicas (PendingReplicaDeletion) starts its own waiting
// period when the last replica is gone.
func (s *Service) housekeeping() {
	next := s.nextDue.Load()
	if next == 0 || s.now().UnixNano() < next {
		return
	}
	_ = s.mutate(func(st *state) *apiError {
		now := s.now()
		// Repeat until nothing changes: deleting the last replica can make
		// its primary's own deletion due at once when the clock jumped far.
		for _, rs := range st.Regions {
			for _, k := range rs.Keys {
				if !k.Settles.IsZero() && !now.Before(k.Settles) {
					if k.State == stateCreating || k.State == stateUpdating {
						k.State = stateEnabled
					}
					k.Settles = time.Time{}
				}
			}
		}
		for changed := true; changed; {
			changed = false
			for _, rs := range st.Regions {
				for _, k := range rs.Keys {
					if k.RotationEnabled && k.isPrimary() && k.State == stateEnabled &&
						!k.NextRotation.IsZero() && !now.Before(k.NextRotation) {
						if e := rotate(st, k, now, "AUTOMATIC"); e != nil {
							return e
						}
						for _, r := range st.related(k) {
							r.NextRotation = now.AddDate(0, 0, int(k.RotationPeriodDays))
						}
						changed = true
					}
				}
			}
			for _, rs := range st.Regions {
				for id, k := range rs.Keys {
					if k.State != statePendingDeletion || k.DeletionDate.IsZero() || now.Before(k.DeletionDate) {
						continue
					}
					changed = true
					delete(rs.Keys, id)
					for name, a := range rs.Aliases {
						if a.TargetID == id {
							delete(rs.Aliases, name)
						}
					}
					if !k.MultiRegion || k.isPrimary() {
						continue
					}
					prs := st.Regions[k.PrimaryRegion]
					if prs == nil {
						continue
					}
					p := prs.Keys[id]
					if p == nil || p.State != statePendingReplicaDeletion || len(st.related(p)) > 1 {
						continue
					}
					// The primary's waiting period starts when its last replica was deleted.
					p.State = statePendingDeletion
					p.DeletionDate = k.DeletionDate.AddDate(0, 0, int(p.PendingWindowDays))
				}
			}
		}
		return nil
	})
}

// ensureRegion reports whether region may hold keys, creating its state when
// no fixed region list was given. Caller holds mu (write).
func (s *Service) ensureRegion(st *state, region string) bool {
	if st.Regions[region] != nil {
		return true
	}
	if s.fixed || !regionRE.MatchString(region) {
		return false
	}
	st.Regions[region] = newRegionState()
	return true
}

// Handler returns the endpoint for one region. Requests signed for another
// region are refused, which catches a client pointed at the wrong endpoint.
func (s *Service) Handler(region string) http.Handler {
	s.mu.Lock()
	if s.st.Regions[region] == nil {
		// Serving a region makes it one: it holds keys and takes replicas.
		s.st.Regions[region] = newRegionState()
	}
	s.mu.Unlock()
	return &regionHandler{s: s, region: region}
}

// SetRateLimit limits region to rps requests per second in each quota class (the
// cryptographic operations share one bucket, the management operations another; burst of one
// second's worth); past it requests get ThrottlingException. 0 disables.
func (s *Service) SetRateLimit(region string, rps float64) {
	s.SetClassRateLimit(region, ClassCryptographic, rps)
	s.SetClassRateLimit(region, ClassManagement, rps)
}

// SetClassRateLimit limits one quota class (ClassCryptographic or ClassManagement) of region.
func (s *Service) SetClassRateLimit(region, class string, rps float64) {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	k := region + "|" + class
	if rps <= 0 {
		delete(s.limiters, k)
		return
	}
	s.limiters[k] = rate.NewLimiter(rate.Limit(rps), int(math.Max(1, math.Ceil(rps))))
}

// Counters returns region -> operation -> calls, throttled calls included;
// "Throttled" counts the calls refused by the rate limit.
func (s *Service) Counters() map[string]map[string]int64 {
	s.cntMu.Lock()
	defer s.cntMu.Unlock()
	out := make(map[string]map[string]int64, len(s.counters))
	for r, m := range s.counters {
		c := make(map[string]int64, len(m))
		for op, n := range m {
			c[op] = n
		}
		out[r] = c
	}
	return out
}

// ResetCounters zeroes all counters.
func (s *Service) ResetCounters() {
	s.cntMu.Lock()
	s.counters = map[string]map[string]int64{}
	s.cntMu.Unlock()
}

// Close stops serving: later requests get an internal error. State is already
// on disk after every mutation, so there is nothing to flush. Safe to call twice.
func (s *Service) Close() error {
	s.closed.Store(true)
	// Wait for an in-flight write so the caller may remove or reuse Dir.
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	return nil
}

func (s *Service) now() time.Time { return time.Now().Add(time.Duration(s.skew.Load())) }

func (s *Service) count(region, op string) {
	s.cntMu.Lock()
	m := s.counters[region]
	if m == nil {
		m = map[string]int64{}
		s.counters[region] = m
	}
	m[op]++
	s.cntMu.Unlock()
}

func (s *Service) allow(region, op string) bool {
	s.limMu.RLock()
	l := s.limiters[region+"|"+OperationClass(op)]
	s.limMu.RUnlock()
	return l == nil || l.Allow()
}

type regionHandler struct {
	s      *Service
	region string
}

const targetPrefix = "TrentService."

func (h *regionHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: "UnknownOperationException", msg: "KMS accepts only POST."})
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), targetPrefix)
	fn := operations[op]
	if !ok || fn == nil {
		writeError(w, clientErr("UnknownOperationException", ""))
		return
	}
	s := h.s
	s.count(h.region, op)
	if s.closed.Load() {
		writeError(w, errInternal("the KMS stand-in is closed"))
		return
	}
	if e := checkScope(r.Header.Get("Authorization"), h.region); e != nil {
		writeError(w, e)
		return
	}
	if !s.allow(h.region, op) {
		s.count(h.region, "Throttled")
		writeError(w, clientErr("ThrottlingException", ThrottleMessage))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, clientErr("SerializationException", "cannot read request body"))
		return
	}
	if len(body) > maxBody {
		writeError(w, errValidation("request body too large"))
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	s.housekeeping()
	if e := s.authorize(r, h.region, op, body); e != nil {
		writeError(w, e)
		return
	}
	out, e := fn(s, h.region, body)
	if e != nil {
		writeError(w, e)
		return
	}
	data, err := json.Marshal(out)
	if err != nil {
		writeError(w, errInternal(err.Error()))
		return
	}
	writeHeaders(w)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// checkScope enforces the SigV4 credential scope's region and service; the
// signature itself is not verified.
func checkScope(auth, region string) *apiError {
	if auth == "" {
		return clientErr("MissingAuthenticationTokenException", "Missing Authentication Token")
	}
	_, cred, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return clientErr("IncompleteSignatureException", "Authorization header requires 'Credential' parameter.")
	}
	if i := strings.IndexAny(cred, ", "); i >= 0 {
		cred = cred[:i]
	}
	// AKID/DATE/REGION/SERVICE/aws4_request
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return clientErr("IncompleteSignatureException", "Credential should have five parts.")
	}
	if parts[2] != region {
		return clientErr("InvalidSignatureException",
			fmt.Sprintf("Credential should be scoped to a valid region, not '%s'. This endpoint serves '%s'.", parts[2], region))
	}
	if parts[3] != "kms" {
		return clientErr("InvalidSignatureException", fmt.Sprintf("Credential should be scoped to correct service: 'kms', not '%s'.", parts[3]))
	}
	return nil
}

func writeHeaders(w http.ResponseWriter) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	h := hex.EncodeToString(id[:])
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", h[0:8]+"-"+h[8:12]+"-"+h[12:16]+"-"+h[16:20]+"-"+h[20:])
}

func writeError(w http.ResponseWriter, e *apiError) {
	data, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message,omitempty"`
	}{e.code, e.msg})
	writeHeaders(w)
	w.WriteHeader(e.status)
	_, _ = w.Write(data)
}

// decode unmarshals a request body; malformed JSON is a SerializationException as in AWS.
func decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return clientErr("SerializationException", "cannot parse request: "+err.Error())
	}
	return nil
}

// sortedKeys returns a region's keys in a stable order for listing.
func sortedKeys(rs *regionState) []*key {
	out := make([]*key, 0, len(rs.Keys))
	for _, k := range rs.Keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
