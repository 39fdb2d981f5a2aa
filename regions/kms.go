package regions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/sethvargo/go-retry"

	"github.com/envdr/envdr/internal/config"
)

// DEKBytes is the size of a data key: AES-256.
const DEKBytes = 32

// do runs one logical operation in this region: it waits on the region's limiter, retries
// throttling, 5xx and connection errors with jittered exponential backoff (go-retry), keeps the
// region's health, and returns a *Error naming region, operation and key.
func (r *Region) do(ctx context.Context, op, keyARN string, f func(context.Context) error) error {
	ok, probe, until := r.available(time.Now())
	if !ok {
		return r.deferred(op, keyARN, until)
	}
	if probe {
		defer r.endProbe()
	}
	// attempt makes one call and says whether another try can help.
	attempt := func(ctx context.Context) (bool, error) {
		if err := r.limiter.wait(ctx); err != nil {
			return false, err
		}
		start := time.Now()
		// Each attempt is bounded: a blackholed or browned-out KMS answers nothing, and the
		// HTTP client's own 30 s would hold the worker (and the event) that long.
		actx, cancel := context.WithTimeout(ctx, r.opts.KMSTimeout)
		err := f(actx)
		if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
			err = &TimeoutError{Service: "kms", After: r.opts.KMSTimeout}
		}
		cancel()
		if r.observer != nil {
			r.observer.KMSCall(r.Name, op, time.Since(start), err)
		}
		if err == nil {
			r.limiter.accepted()
			r.noteReachable()
			return false, nil
		}
		if ctx.Err() != nil {
			return false, err // the caller gave up: says nothing about the region
		}
		mapped, retryable := classify(err)
		switch {
		case errors.Is(mapped, ErrThrottled):
			r.limiter.throttled()
			if r.observer != nil {
				r.observer.Throttled(r.Name, op)
			}
		case errors.Is(mapped, ErrRegionUnavailable):
			r.noteUnreachable(mapped)
			if r.coolingDown(time.Now()) {
				return false, mapped // now marked unhealthy: defer instead of retrying
			}
		default:
			r.limiter.answered()
			r.noteReachable() // the region answered
		}
		return retryable, mapped
	}
	// The first try runs outside go-retry: the common case builds no backoff.
	again, err := attempt(ctx)
	if again && r.opts.Attempts > 1 {
		b := retry.NewExponential(r.opts.BaseBackoff)
		b = retry.WithCappedDuration(r.opts.MaxBackoff, b)
		b = retry.WithJitterPercent(30, b)
		b = retry.WithMaxRetries(uint64(r.opts.Attempts-1), b)
		first := true
		err = retry.Do(ctx, b, func(ctx context.Context) error {
			if first { // retry.Do calls at once; the first retry must wait like the later ones
				first = false
				return retry.RetryableError(err)
			}
			again, e := attempt(ctx)
			if again {
				return retry.RetryableError(e)
			}
			return e
		})
	}
	if err == nil {
		return nil
	}
	return &Error{Region: r.Name, Op: op, KeyARN: keyARN, Err: err}
}

// checkKeyRegion refuses a key ARN of another region before anything is sent.
func (r *Region) checkKeyRegion(op, keyARN string) error {
	if kr := ARNRegion(keyARN); kr != "" && kr != r.Name {
		return &Error{Region: r.Name, Op: op, KeyARN: keyARN, Err: fmt.Errorf("%w (%s)", ErrWrongRegion, kr)}
	}
	return nil
}

// GenerateDataKeyRaw asks this region's key for a fresh 256-bit DEK bound to ec. The caller owns
// (and must wipe) the plaintext. keyARN is the full key ARN KMS reports.
func (r *Region) GenerateDataKeyRaw(ctx context.Context, ec map[string]string) (plaintext, wrapped []byte, keyARN string, err error) {
	err = r.do(ctx, "GenerateDataKey", r.KeyARN, func(ctx context.Context) error {
		out, err := r.kms.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
			KeyId: aws.String(r.KeyARN), NumberOfBytes: aws.Int32(DEKBytes), EncryptionContext: ec,
		})
		if err != nil {
			return err
		}
		if len(out.Plaintext) != DEKBytes {
			return fmt.Errorf("KMS returned a %d-byte data key, want %d", len(out.Plaintext), DEKBytes)
		}
		plaintext, wrapped, keyARN = out.Plaintext, out.CiphertextBlob, aws.ToString(out.KeyId)
		return nil
	})
	return plaintext, wrapped, keyARN, err
}

// DecryptRaw unwraps a DEK made under keyARN with ec. keyARN must be one of this region's
// allowed keys (CheckUnwrapKey); anything else, an empty keyARN included, is refused before any
// KMS call. The KeyId sent is always keyARN.
func (r *Region) DecryptRaw(ctx context.Context, wrapped []byte, keyARN string, ec map[string]string) ([]byte, error) {
	if err := r.CheckUnwrapKey(ctx, "Decrypt", keyARN); err != nil {
		return nil, err
	}
	var pt []byte
	err := r.do(ctx, "Decrypt", keyARN, func(ctx context.Context) error {
		in := &kms.DecryptInput{CiphertextBlob: wrapped, EncryptionContext: ec}
		if keyARN != "" {
			in.KeyId = aws.String(keyARN)
		}
		out, err := r.kms.Decrypt(ctx, in)
		if err != nil {
			return err
		}
		pt = out.Plaintext
		return nil
	})
	return pt, err
}

// EncryptRaw wraps a DEK under this region's key with ec (independent mode). It returns the new
// wrap and the full key ARN.
func (r *Region) EncryptRaw(ctx context.Context, dek []byte, ec map[string]string) (wrapped []byte, keyARN string, err error) {
	err = r.do(ctx, "Encrypt", r.KeyARN, func(ctx context.Context) error {
		out, err := r.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(r.KeyARN), Plaintext: dek, EncryptionContext: ec})
		if err != nil {
			return err
		}
		wrapped, keyARN = out.CiphertextBlob, aws.ToString(out.KeyId)
		return nil
	})
	return wrapped, keyARN, err
}

// ReEncrypt re-wraps, inside KMS in this region, a DEK wrapped under srcKeyARN (an allowed key of
// this region, as for DecryptRaw: for multi-Region keys, this region's replica) so it is wrapped
// under destKeyARN (empty: this region's configured key). The DEK never leaves KMS. The context
// stays the same.
func (r *Region) ReEncrypt(ctx context.Context, wrapped []byte, srcKeyARN, destKeyARN string, ec map[string]string) (newWrapped []byte, keyARN string, err error) {
	if destKeyARN == "" {
		destKeyARN = r.KeyARN
	}
	if err := r.CheckUnwrapKey(ctx, "ReEncrypt", srcKeyARN); err != nil {
		return nil, "", err
	}
	if err := r.checkKeyRegion("ReEncrypt", destKeyARN); err != nil {
		return nil, "", err
	}
	err = r.do(ctx, "ReEncrypt", destKeyARN, func(ctx context.Context) error {
		in := &kms.ReEncryptInput{
			CiphertextBlob: wrapped, DestinationKeyId: aws.String(destKeyARN),
			SourceEncryptionContext: ec, DestinationEncryptionContext: ec,
		}
		if srcKeyARN != "" {
			in.SourceKeyId = aws.String(srcKeyARN)
		}
		out, err := r.kms.ReEncrypt(ctx, in)
		if err != nil {
			return err
		}
		newWrapped, keyARN = out.CiphertextBlob, aws.ToString(out.KeyId)
		return nil
	})
	return newWrapped, keyARN, err
}

// KeyInfo is what CheckKey learned about a region's key.
type KeyInfo struct {
	Region      string
	ARN         string // the resolved key ARN (an alias resolves to its key)
	KeyID       string
	MultiRegion bool
	PrimaryARN  string // for multi-Region keys
	State       string
}

// DescribeKey resolves this region's configured key.
func (r *Region) DescribeKey(ctx context.Context) (*KeyInfo, error) {
	var ki *KeyInfo
	err := r.do(ctx, "DescribeKey", r.KeyARN, func(ctx context.Context) error {
		out, err := r.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(r.KeyARN)})
		if err != nil {
			return err
		}
		m := out.KeyMetadata
		ki = &KeyInfo{Region: r.Name, ARN: aws.ToString(m.Arn), KeyID: aws.ToString(m.KeyId),
			MultiRegion: aws.ToBool(m.MultiRegion), State: string(m.KeyState)}
		if mc := m.MultiRegionConfiguration; mc != nil && mc.PrimaryKey != nil {
			ki.PrimaryARN = aws.ToString(mc.PrimaryKey.Arn)
		}
		return nil
	})
	return ki, err
}

// CheckKeys checks every region's key at start-up: it exists, is enabled, and in mrk mode is a
// replica of (or is) the home region's multi-Region key. The error names region and key.
func (t *Topology) CheckKeys(ctx context.Context) (map[string]*KeyInfo, error) {
	infos := map[string]*KeyInfo{}
	var errs []error
	for _, name := range t.order {
		r := t.regions[name]
		ki, err := r.DescribeKey(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		infos[name] = ki
		r.NoteKeyResolved(ki.ARN)
		if ki.State != string(kmstypes.KeyStateEnabled) {
			errs = append(errs, &Error{Region: name, Op: "DescribeKey", KeyARN: r.KeyARN,
				Err: fmt.Errorf("%w: key state is %s; enable it (aws kms enable-key)", ErrKeyDisabled, ki.State)})
		}
		if r.Mode == config.ModeMRK && !ki.MultiRegion {
			errs = append(errs, &Error{Region: name, Op: "DescribeKey", KeyARN: r.KeyARN,
				Err: fmt.Errorf("mode is mrk but %s is a single-Region key; use a replica of the home key or set mode: independent", ki.ARN)})
		}
	}
	if home, ok := infos[t.Home]; ok {
		for _, name := range t.order {
			ki, ok := infos[name]
			if !ok || t.regions[name].Mode != config.ModeMRK || !ki.MultiRegion {
				continue
			}
			if ki.KeyID != home.KeyID && home.MultiRegion {
				errs = append(errs, &Error{Region: name, Op: "DescribeKey", KeyARN: t.regions[name].KeyARN,
					Err: fmt.Errorf("key %s is not a replica of the home key %s (key IDs differ); replicate the home key into %s (aws kms replicate-key)", ki.ARN, home.ARN, name)})
			}
		}
	}
	return infos, errors.Join(errs...)
}
