package regions

import (
	"context"
	"fmt"

	"github.com/envdr/envdr/envelope"
)

// Compile-time checks: a Region is a per-region key for the envelope core.
var (
	_ envelope.KeyGenerator = (*Region)(nil)
	_ envelope.Unwrapper    = (*Region)(nil)
)

// GenerateDataKey implements envelope.KeyGenerator with KMS GenerateDataKey under this region's
// key, bound to ec.
func (r *Region) GenerateDataKey(ctx context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	pt, wrapped, arn, err := r.GenerateDataKeyRaw(ctx, ec.Map())
	if err != nil {
		return nil, err
	}
	return &envelope.DataKey{Plaintext: pt, Wrapped: wrapped, KeyARN: arn, Region: r.Name}, nil
}

// Unwrap implements envelope.Unwrapper with KMS Decrypt in this region only.
func (r *Region) Unwrap(ctx context.Context, wrapped []byte, keyARN string, ec envelope.Context) ([]byte, error) {
	return r.DecryptRaw(ctx, wrapped, keyARN, ec.Map())
}

// CopyWrap wraps under this region's key (Encrypt, empty dest: the configured key) the DEK that
// wrapped opens in src (Decrypt under srcKeyARN): the independent-keys path of filling a region
// from another's wrap. The DEK is checked against the record's commitment before it is wrapped
// again, so a wrong key is never copied, and wiped before CopyWrap returns. wait, when not nil,
// runs before each of the two KMS calls (a caller's rate limit and its counting). record names
// the record in errors.
func (r *Region) CopyWrap(ctx context.Context, src *Region, wrapped []byte, srcKeyARN string, commitment []byte, ec map[string]string, record string, wait func(context.Context) error) ([]byte, string, error) {
	if wait == nil {
		wait = func(context.Context) error { return nil }
	}
	if err := wait(ctx); err != nil {
		return nil, "", err
	}
	dek, err := src.DecryptRaw(ctx, wrapped, srcKeyARN, ec)
	if err != nil {
		return nil, "", err
	}
	defer envelope.Wipe(dek)
	if err := envelope.CheckCommitment(dek, commitment); err != nil {
		return nil, "", fmt.Errorf("region %s: record %s: %w", src.Name, record, err)
	}
	if err := wait(ctx); err != nil {
		return nil, "", err
	}
	return r.EncryptRaw(ctx, dek, ec)
}
