package regions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// ErrUntrustedKey: an unwrap named a key that is not one of the region's allowed keys (its
// configured key, previous_keys, a trusted_keys entry, or a multi-Region replica of one of them),
// or named no key at all. It is refused before any KMS call: the key ARN comes from an
// unauthenticated header or record, and a DEK unwrapped under a key the operator never chose
// would let whoever controls that key choose the plaintext.
var ErrUntrustedKey = errors.New("key is not trusted for this region")

// ErrAliasRecheckPending: the key is not allowed now, but a configured alias was resolved less
// than 10 s ago and may since have moved to it; it matches ErrUntrustedKey too. The daemon
// retries such an event later instead of dead-lettering it.
var ErrAliasRecheckPending = errors.New("the configured alias is re-resolved at most every 10 s")

// aliasRecheck is how often, at most, a region re-resolves its aliases when an unknown key is
// named: an alias repointed to a new key is then picked up, and what it resolved to before stays
// allowed.
const aliasRecheck = 10 * time.Second

// keyTrust is a region's allowed keys: the ARNs as configured (key ARNs or alias ARNs), and every
// key ARN an alias among them has resolved to (never forgotten).
type keyTrust struct {
	mu          sync.Mutex
	configured  []string        // key and alias ARNs, as configured
	resolved    map[string]bool // key ARNs aliases resolved to
	lastResolve time.Time
	anyKey      bool // --trust-any-key: discovery, no check
}

func newKeyTrust(region string, keys []string, trusted []string, anyKey bool) *keyTrust {
	t := &keyTrust{resolved: map[string]bool{}, anyKey: anyKey}
	seen := map[string]bool{}
	for _, k := range append(append([]string(nil), keys...), trusted...) {
		if k == "" || seen[k] {
			continue
		}
		// trusted_keys is one list for every region: a key of another region only matters here
		// when it is a multi-Region key (its replica here is trusted too).
		if ARNRegion(k) != region && !IsMultiRegionKeyARN(k) {
			continue
		}
		seen[k] = true
		t.configured = append(t.configured, k)
	}
	return t
}

// sameKey reports whether key ARN k (in region) is allowed key a: the same key, or, for
// multi-Region keys, a's replica in region (same partition, account and mrk- key ID).
func sameKey(k, a, region string) bool {
	if k == a {
		return true
	}
	if KeyID(k) == "" || KeyID(a) == "" || KeyID(k) != KeyID(a) {
		return false
	}
	kp, ap := strings.SplitN(k, ":", 6), strings.SplitN(a, ":", 6)
	if kp[1] != ap[1] || kp[4] != ap[4] || kp[3] != region {
		return false
	}
	return kp[3] == ap[3] || IsMultiRegionKeyARN(k)
}

func (t *keyTrust) allows(k, region string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.configured {
		if sameKey(k, a, region) {
			return true
		}
	}
	for a := range t.resolved {
		if sameKey(k, a, region) {
			return true
		}
	}
	return false
}

func (t *keyTrust) aliases() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, a := range t.configured {
		if KeyID(a) == "" { // an alias ARN
			out = append(out, a)
		}
	}
	return out
}

// noteResolved records what an alias (or key) resolved to.
func (t *keyTrust) noteResolved(arn string) {
	if arn == "" {
		return
	}
	t.mu.Lock()
	t.resolved[arn] = true
	t.mu.Unlock()
}

// AllowedKeys lists the region's allowed keys as configured, then the key ARNs aliases have
// resolved to so far (for messages and docs; the check also accepts multi-Region replicas).
func (r *Region) AllowedKeys() []string {
	t := r.trust
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.configured...)
	for a := range t.resolved {
		out = append(out, a)
	}
	return out
}

// NoteKeyResolved records that the region's configured key (an alias, say) resolved to arn, as
// CheckKeys learns at start-up; arn stays allowed even after the alias moves on.
func (r *Region) NoteKeyResolved(arn string) { r.trust.noteResolved(arn) }

// TrustsAnyKey reports whether the strict key check is off (--trust-any-key).
func (r *Region) TrustsAnyKey() bool { return r.trust.anyKey }

// CheckUnwrapKey refuses, before any KMS call, an unwrap under keyARN unless keyARN is one of
// this region's allowed keys: the configured key, previous_keys, trusted_keys, a multi-Region
// replica of one of them in this region, or what a configured alias resolves (or resolved) to.
// Aliases are resolved with DescribeKey on first need and again, at most every 10 s, when an
// unknown key is named. An empty keyARN is refused too (KMS would pick the key from the
// ciphertext). With Options.TrustAnyKey only the region of keyARN is checked.
func (r *Region) CheckUnwrapKey(ctx context.Context, op, keyARN string) error {
	if err := r.checkKeyRegion(op, keyARN); err != nil {
		return err
	}
	if r.trust.anyKey {
		return nil
	}
	if keyARN == "" {
		return &Error{Region: r.Name, Op: op, KeyARN: "(none)",
			Err: fmt.Errorf("%w: the wrap names no key; refusing to let KMS pick one (pass --trust-any-key to allow discovery)", ErrUntrustedKey)}
	}
	if ARNRegion(keyARN) != r.Name || KeyID(keyARN) == "" {
		return &Error{Region: r.Name, Op: op, KeyARN: keyARN,
			Err: fmt.Errorf("%w: not a key ARN of region %s", ErrUntrustedKey, r.Name)}
	}
	if r.trust.allows(keyARN, r.Name) {
		return nil
	}
	resolved, err := r.resolveAliases(ctx)
	if err != nil {
		return err
	}
	if r.trust.allows(keyARN, r.Name) {
		return nil
	}
	if !resolved && len(r.trust.aliases()) > 0 {
		return &Error{Region: r.Name, Op: op, KeyARN: keyARN, Err: fmt.Errorf(
			"%w: key %s is not a key configured for region %s (allowed: %s), and %w",
			ErrUntrustedKey, keyARN, r.Name, strings.Join(r.AllowedKeys(), ", "), ErrAliasRecheckPending)}
	}
	return &Error{Region: r.Name, Op: op, KeyARN: keyARN, Err: fmt.Errorf(
		"%w: key %s is not a key configured for region %s (allowed: %s); add it to previous_keys or trusted_keys in the config, or pass --trust-any-key",
		ErrUntrustedKey, keyARN, r.Name, strings.Join(r.AllowedKeys(), ", "))}
}

// resolveAliases resolves every configured alias with DescribeKey, at most every aliasRecheck;
// resolved says whether it did now.
func (r *Region) resolveAliases(ctx context.Context) (resolved bool, err error) {
	aliases := r.trust.aliases()
	if len(aliases) == 0 {
		return false, nil
	}
	r.trust.mu.Lock()
	if !r.trust.lastResolve.IsZero() && time.Since(r.trust.lastResolve) < aliasRecheck {
		r.trust.mu.Unlock()
		return false, nil
	}
	r.trust.lastResolve = time.Now()
	r.trust.mu.Unlock()
	var errs []error
	for _, a := range aliases {
		err := r.do(ctx, "DescribeKey", a, func(ctx context.Context) error {
			out, err := r.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(a)})
			if err != nil {
				return err
			}
			if out.KeyMetadata != nil {
				r.trust.noteResolved(aws.ToString(out.KeyMetadata.Arn))
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		r.trust.mu.Lock()
		r.trust.lastResolve = time.Time{} // try again next time
		r.trust.mu.Unlock()
	}
	return true, errors.Join(errs...)
}

// TrustKey adds a key (or alias) ARN to this region's allowed keys for the life of the process:
// rewrap trusts the target key it was told to wrap under (--to-key) so it can check its new wraps.
func (r *Region) TrustKey(arn string) {
	t := r.trust
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.configured {
		if a == arn {
			return
		}
	}
	t.configured = append(t.configured, arn)
}
