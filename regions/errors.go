package regions

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"
	"time"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
)

// Sentinels callers branch on with errors.Is.
var (
	// ErrRegionUnavailable: the region's endpoint could not be reached (connection refused,
	// reset, DNS, timeout) or the region is marked unhealthy and its work is deferred.
	ErrRegionUnavailable = errors.New("region unavailable")
	// ErrThrottled: KMS answered ThrottlingException and retries within the attempt ran out.
	ErrThrottled = errors.New("throttled")
	// ErrKeyNotFound: the key (or alias) does not exist in that region.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyDisabled: the key is disabled or pending deletion.
	ErrKeyDisabled = errors.New("key disabled or pending deletion")
	// ErrInvalidCiphertext: KMS rejected the wrapped DEK (corrupt, another key's, or a different
	// encryption context).
	ErrInvalidCiphertext = errors.New("invalid ciphertext")
	// ErrWrongRegion: a key ARN of another region was handed to this region (a bug, never sent).
	ErrWrongRegion = errors.New("key ARN belongs to another region")
	// ErrNotConfigured: the region is not in the topology (or excluded, as in a drill).
	ErrNotConfigured = errors.New("region not configured")
)

// TimeoutError is one attempt of a call that got no answer within its per-attempt timeout: a
// blackholed, partitioned or badly browned-out endpoint. It counts as the region being
// unreachable (errors.Is(err, ErrRegionUnavailable)).
type TimeoutError struct {
	Service string // kms, dynamodb
	After   time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s: no answer within %s (per-attempt timeout)", e.Service, e.After)
}

// Timeout reports true (net.Error's convention).
func (e *TimeoutError) Timeout() bool { return true }

// Is makes a TimeoutError an ErrRegionUnavailable.
func (e *TimeoutError) Is(target error) bool { return target == ErrRegionUnavailable }

// Error is a failed call in one region, naming the region, the operation and the key.
type Error struct {
	Region string
	Op     string // KMS or service operation, e.g. "ReEncrypt"
	KeyARN string
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "region %s: %s", e.Region, e.Op)
	if e.KeyARN != "" {
		fmt.Fprintf(&b, " with key %s", e.KeyARN)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// classify maps an SDK error onto our sentinels (keeping the original for the message), and says
// whether another try within this attempt can help.
func classify(err error) (mapped error, retryable bool) {
	if err == nil {
		return nil, false
	}
	var te *TimeoutError
	if errors.As(err, &te) {
		// Not retried within the call: another attempt would most likely wait out the same
		// timeout. The region's health decides; the event comes back on redelivery.
		return err, false
	}
	var (
		nf   *kmstypes.NotFoundException
		dis  *kmstypes.DisabledException
		inv  *kmstypes.KMSInvalidStateException
		ict  *kmstypes.InvalidCiphertextException
		ike  *kmstypes.IncorrectKeyException
		kue  *kmstypes.KeyUnavailableException
		dte  *kmstypes.DependencyTimeoutException
		kie  *kmstypes.KMSInternalException
		apie smithy.APIError
	)
	switch {
	case errors.As(err, &nf):
		return fmt.Errorf("%w: %s", ErrKeyNotFound, nf.ErrorMessage()), false
	case errors.As(err, &dis):
		return fmt.Errorf("%w: %s", ErrKeyDisabled, dis.ErrorMessage()), false
	case errors.As(err, &inv):
		return fmt.Errorf("%w: %s", ErrKeyDisabled, inv.ErrorMessage()), false
	case errors.As(err, &ict), errors.As(err, &ike):
		return fmt.Errorf("%w (corrupt wrap, another key's wrap, or a different encryption context)", ErrInvalidCiphertext), false
	case errors.As(err, &kue), errors.As(err, &dte), errors.As(err, &kie):
		return err, true
	case errors.As(err, &apie):
		code := apie.ErrorCode()
		if code == "ThrottlingException" || code == "ThrottledException" || code == "RequestLimitExceeded" ||
			code == "ProvisionedThroughputExceededException" || code == "TooManyRequestsException" {
			return fmt.Errorf("%w: %s", ErrThrottled, apie.ErrorMessage()), true
		}
		if apie.ErrorFault() == smithy.FaultServer {
			return err, true
		}
		// A 5xx whose code the client does not model (ServiceUnavailable, InternalFailure, a
		// proxy's 502) is a server fault too: retry it.
		var re interface{ HTTPStatusCode() int }
		if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
			return err, true
		}
		return err, false
	}
	if isConnError(err) {
		return fmt.Errorf("%w: %v", ErrRegionUnavailable, err), true
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return err, true
	}
	return err, false
}

// isConnError reports a failure to reach the endpoint at all.
func isConnError(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &oe) || errors.As(err, &de)
}

// IsConnError reports whether err is a failure to reach an endpoint at all.
func IsConnError(err error) bool { return errors.Is(err, ErrRegionUnavailable) || isConnError(err) }

// WithoutUnavailable drops the ErrRegionUnavailable errors from a joined error (as CheckKeys
// returns), keeping every other finding; nil when none is left.
func WithoutUnavailable(err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var keep []error
	for _, e := range errs {
		if !errors.Is(e, ErrRegionUnavailable) {
			keep = append(keep, e)
		}
	}
	return errors.Join(keep...)
}

// AccessDenied is an AWS authorization failure, as KMS (AccessDeniedException), SQS
// (AccessDenied) and DynamoDB (AccessDeniedException) word it: "User: PRINCIPAL is not
// authorized to perform: ACTION on resource: RESOURCE because ...".
type AccessDenied struct {
	Principal, Action, Resource, Why string
}

var accessDeniedRE = regexp.MustCompile(`User: (\S+) is not authorized to perform: (\S+) on resource: (\S+?)(?:\s+(because .*|with an explicit deny.*))?$`)

// FindAccessDenied finds an AWS access denial in err's chain.
func FindAccessDenied(err error) (*AccessDenied, bool) {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return nil, false
	}
	switch ae.ErrorCode() {
	case "AccessDeniedException", "AccessDenied":
	default:
		return nil, false
	}
	m := accessDeniedRE.FindStringSubmatch(strings.TrimSpace(ae.ErrorMessage()))
	if m == nil {
		return &AccessDenied{Why: ae.ErrorMessage()}, true
	}
	return &AccessDenied{Principal: m[1], Action: m[2], Resource: m[3], Why: m[4]}, true
}

// Role is the role name of an assumed-role or role principal ARN, or the ARN itself.
func (a *AccessDenied) Role() string {
	if _, rest, ok := strings.Cut(a.Principal, ":assumed-role/"); ok {
		name, _, _ := strings.Cut(rest, "/")
		return name
	}
	if _, name, ok := strings.Cut(a.Principal, ":role/"); ok {
		return name
	}
	return a.Principal
}

// Fix says how to change the policies so the call is allowed.
func (a *AccessDenied) Fix() string {
	if a.Action == "" {
		return "check the caller's IAM policy and, for KMS, the key policy (envdr policy render writes both; docs/POLICY.md)"
	}
	if strings.Contains(a.Why, "explicit deny") {
		return fmt.Sprintf("a Deny statement matches %s on %s for role %s: narrow or remove it (envdr policy lint shows the documents)", a.Action, a.Resource, a.Role())
	}
	where := "its IAM policy"
	if strings.HasPrefix(a.Action, "kms:") {
		where = "its IAM policy (with the key policy delegating to the account) or the key policy"
	}
	return fmt.Sprintf("allow %s on %s to role %s in %s; envdr policy render generates what each envdr command needs (docs/POLICY.md), and the local stand-in tries a change first: PUT /iam/roles/%s/policy (docs/LOCAL.md)",
		a.Action, a.Resource, a.Role(), where, a.Role())
}
