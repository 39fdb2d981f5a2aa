package regions

import (
	"context"

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
