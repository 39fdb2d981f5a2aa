package regions

import (
	"fmt"
	"strings"

	"github.com/envdr/envdr/internal/config"
)

// KeyID returns the key ID part of a key ARN ("mrk-..." or a UUID), or "" for an alias ARN.
func KeyID(arn string) string {
	p := strings.SplitN(arn, ":", 6)
	if len(p) != 6 || !strings.HasPrefix(p[5], "key/") {
		return ""
	}
	return strings.TrimPrefix(p[5], "key/")
}

// IsMultiRegionKeyARN reports whether arn names a multi-Region key (key ID starts with mrk-).
func IsMultiRegionKeyARN(arn string) bool { return strings.HasPrefix(KeyID(arn), "mrk-") }

// ReplicaARN returns the ARN of the related multi-Region key in region: same partition, account
// and key ID, another region. It fails for single-Region keys and aliases.
func ReplicaARN(arn, region string) (string, error) {
	if !IsMultiRegionKeyARN(arn) {
		return "", fmt.Errorf("key %s is not a multi-Region key ARN (arn:...:key/mrk-...)", arn)
	}
	p := strings.SplitN(arn, ":", 6)
	p[3] = region
	return strings.Join(p, ":"), nil
}

// ARNRegion returns the region of a KMS key or alias ARN, or "".
func ARNRegion(arn string) string { return config.ARNRegion(arn) }
