// Package regions is envdr's topology: the configured regions, their keys (multi-Region replica
// or independent), one set of AWS clients per region built once at start-up with that region's
// endpoints only, a token-bucket KMS limiter bounded by kms_rate that finds this process's share
// of the region's quota by itself (limiter.go), and health.
//
// Each Region is also the per-region key: it implements envelope.KeyGenerator (GenerateDataKey)
// and envelope.Unwrapper (Decrypt), and offers ReEncrypt and Encrypt for replication. Nothing in
// a Region ever reaches another region's endpoint: a key ARN of another region is refused before
// any call is made.
package regions

import (
	"context"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/envdr/envdr/internal/config"
)

// KMSAPI is the part of the KMS client the hot paths use; tests may put a fake behind it.
type KMSAPI interface {
	GenerateDataKey(context.Context, *kms.GenerateDataKeyInput, ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error)
	Decrypt(context.Context, *kms.DecryptInput, ...func(*kms.Options)) (*kms.DecryptOutput, error)
	Encrypt(context.Context, *kms.EncryptInput, ...func(*kms.Options)) (*kms.EncryptOutput, error)
	ReEncrypt(context.Context, *kms.ReEncryptInput, ...func(*kms.Options)) (*kms.ReEncryptOutput, error)
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

var _ KMSAPI = (*kms.Client)(nil)

// Observer receives per-call measurements (the daemon turns them into Prometheus metrics).
type Observer interface {
	// KMSCall is called once per KMS request sent, with its latency and outcome.
	KMSCall(region, op string, d time.Duration, err error)
	// Throttled is called for each ThrottlingException answer.
	Throttled(region, op string)
}

// Options tune New.
type Options struct {
	// Exclude names regions for which no client is built (a drill's lost region). Any use of
	// them fails with ErrNotConfigured.
	Exclude []string
	// Attempts is the number of tries of one call within one operation (throttling, 5xx,
	// connection errors); default from config worker.attempts.
	Attempts int
	// BaseBackoff is the first retry delay (exponential, jittered, capped at MaxBackoff).
	BaseBackoff, MaxBackoff time.Duration
	// UnhealthyAfter consecutive unreachable answers mark a region unhealthy; it is then probed
	// again after a cool-down that doubles up to MaxCooldown.
	UnhealthyAfter int
	MaxCooldown    time.Duration
	// KMSTimeout bounds each attempt of a KMS call, DynamoDBTimeout each attempt of a DynamoDB
	// call (default from config worker.kms_timeout / worker.dynamodb_timeout). An attempt with no
	// answer in time is a *TimeoutError, which counts as the region being unreachable.
	KMSTimeout, DynamoDBTimeout time.Duration
	// Observer, optional.
	Observer Observer
	// HTTPClient, optional: shared transport for all clients (the default keeps many idle
	// connections per host for the daemon's concurrency). Keep it an *awshttp.BuildableClient:
	// the SDK adds AWS_CA_BUNDLE (or ca_bundle) only to one of those.
	HTTPClient aws.HTTPClient
	// WrapHTTPClient, optional, wraps each region's HTTP client after the SDK has built it (with
	// AWS_CA_BUNDLE applied): the drill's guard. It sees the API calls, not the credential
	// fetches.
	WrapHTTPClient func(aws.HTTPClient) aws.HTTPClient
	// Now is the clock of the KMS limiter's rate adaptation; nil means time.Now. Tests inject one.
	Now func() time.Time
	// Jitter is the limiter's source of jitter, uniform in [0, 1); nil means math/rand/v2.
	// Tests inject a fixed one.
	Jitter func() float64
	// TrustedKeys are keys (ARNs or alias ARNs) allowed for unwrapping besides each region's
	// configured key; New fills it from the config's trusted_keys.
	TrustedKeys []string
	// TrustAnyKey turns the strict key check off (--trust-any-key): any key of the region, or
	// none (KMS discovers it from the ciphertext), may be named by a header or record.
	TrustAnyKey bool
	// SDKLogger receives the AWS SDK's log lines (default: SetDefaultSDKLogger's, else the SDK's).
	SDKLogger *SDKLogger
}

func (o *Options) withDefaults(c *config.Config) {
	if o.Attempts == 0 {
		o.Attempts = c.Worker.Attempts
	}
	if o.Attempts == 0 {
		o.Attempts = 5
	}
	if o.BaseBackoff == 0 {
		o.BaseBackoff = 25 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 2 * time.Second
	}
	if o.UnhealthyAfter == 0 {
		o.UnhealthyAfter = 3
	}
	if o.MaxCooldown == 0 {
		o.MaxCooldown = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.KMSTimeout == 0 {
		o.KMSTimeout = c.Worker.KMSTimeout
	}
	if o.KMSTimeout == 0 {
		o.KMSTimeout = config.DefaultKMSTimeout
	}
	if o.DynamoDBTimeout == 0 {
		o.DynamoDBTimeout = c.Worker.DynamoDBTimeout
	}
	if o.DynamoDBTimeout == 0 {
		o.DynamoDBTimeout = config.DefaultDynamoDBTimeout
	}
	if o.SDKLogger == nil {
		o.SDKLogger = defaultSDKLogger.Load()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns = 1024
			t.MaxIdleConnsPerHost = 256
		}).WithTimeout(30 * time.Second)
	}
}

// Topology is every configured region with its clients, built once.
type Topology struct {
	Home    string
	cfg     *config.Config
	order   []string
	regions map[string]*Region
}

// New builds the clients of every configured region (except Options.Exclude). It makes no
// network calls; use CheckKeys to check the key setup.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Topology, error) {
	opts.withDefaults(cfg)
	opts.TrustedKeys = append(append([]string(nil), opts.TrustedKeys...), cfg.TrustedKeys...)
	// A region's earlier multi-Region keys are trusted in every region through their replicas:
	// an event under the old key is re-wrapped (ReEncrypt) from the replica in each region.
	for _, rc := range cfg.Regions {
		for _, k := range rc.PreviousKeys {
			if IsMultiRegionKeyARN(k) {
				opts.TrustedKeys = append(opts.TrustedKeys, k)
			}
		}
	}
	excluded := map[string]bool{}
	for _, r := range opts.Exclude {
		if _, ok := cfg.Region(r); !ok {
			return nil, fmt.Errorf("region %s: %w (configured: %v)", r, ErrNotConfigured, cfg.RegionNames())
		}
		excluded[r] = true
	}
	t := &Topology{Home: cfg.HomeRegion, cfg: cfg, regions: map[string]*Region{}}
	for _, rc := range cfg.Regions {
		if excluded[rc.Name] {
			continue
		}
		awsCfg, err := AWSConfig(ctx, cfg, rc, opts.HTTPClient)
		if err != nil {
			return nil, fmt.Errorf("region %s: %w", rc.Name, err)
		}
		if opts.SDKLogger != nil {
			awsCfg.Logger, awsCfg.ClientLogMode = *opts.SDKLogger, opts.SDKLogger.logMode()
		}
		s3HC := s3HTTPClient(awsCfg.HTTPClient)
		if opts.WrapHTTPClient != nil {
			awsCfg.HTTPClient = opts.WrapHTTPClient(awsCfg.HTTPClient)
			if s3HC != nil {
				s3HC = opts.WrapHTTPClient(s3HC)
			}
		}
		r := newRegion(rc, awsCfg, opts)
		s3Cfg := awsCfg.Copy()
		if s3HC != nil {
			s3Cfg.HTTPClient = s3HC
		}
		// Not through ownBodies: upload parts are megabytes, and an S3 part is safe to resend.
		r.s3 = newS3(s3Cfg, rc.Endpoints.S3, opts)
		t.order = append(t.order, rc.Name)
		t.regions[rc.Name] = r
	}
	return t, nil
}

// AWSConfig returns the SDK config for one region: the region's endpoint overrides, and the
// standard credential chain (environment, shared credentials file and profile, ECS task role,
// IRSA), exactly as on AWS. With the stand-in's config (cfg.Local set) and no credentials chosen
// in the environment (neither AWS_PROFILE nor AWS_ACCESS_KEY_ID), the config's own credentials
// are used instead, without reading the shared AWS config files: the stand-in's admin identity,
// so local commands work with no setup. `AWS_SHARED_CREDENTIALS_FILE=local/credentials
// AWS_PROFILE=envdr-daemon` runs as the daemon role.
//
// The config keeps the SDK's retryer: LoadDefaultConfig hands it to the credential providers it
// builds (the ECS and EKS Pod Identity endpoints, STS for IRSA and assumed roles), which must
// retry a failed fetch. The API clients that retry on their own turn the SDK's retries off per
// client (newRegion: KMS; Region.do retries with its limiter and backoff).
func AWSConfig(ctx context.Context, cfg *config.Config, rc config.Region, hc aws.HTTPClient) (aws.Config, error) {
	if cfg.Local != nil {
		var creds aws.CredentialsProvider = credentials.NewStaticCredentialsProvider(cfg.Local.AccessKey, cfg.Local.SecretKey, "")
		if CredentialsChosen() {
			// Only the credentials come from the chain: the stand-in needs no CA bundle, and a
			// caller's own HTTP client (drill's guard) cannot take AWS_CA_BUNDLE anyway.
			ac, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(rc.Name))
			if err != nil {
				return aws.Config{}, fmt.Errorf("AWS credentials and config: %w", err)
			}
			creds = ac.Credentials
		}
		return aws.Config{
			Region:      rc.Name,
			Credentials: creds,
			HTTPClient:  hc,
		}, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(rc.Name)}
	if hc != nil {
		opts = append(opts, awsconfig.WithHTTPClient(hc))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("AWS credentials and config: %w", err)
	}
	return ac, nil
}

// CredentialsChosen reports whether the environment selects AWS credentials (a profile or keys),
// which then take precedence over a stand-in config's own.
func CredentialsChosen() bool {
	return os.Getenv("AWS_PROFILE") != "" || os.Getenv("AWS_ACCESS_KEY_ID") != ""
}

// Names lists the regions with clients, in config order.
func (t *Topology) Names() []string { return append([]string(nil), t.order...) }

// Config returns the config the topology was built from.
func (t *Topology) Config() *config.Config { return t.cfg }

// Region returns the named region, or an error naming it when it is not configured or excluded.
func (t *Topology) Region(name string) (*Region, error) {
	r, ok := t.regions[name]
	if !ok {
		return nil, fmt.Errorf("region %s: %w", name, ErrNotConfigured)
	}
	return r, nil
}

// HomeRegion returns the home region (where producers seal).
func (t *Topology) HomeRegion() (*Region, error) { return t.Region(t.Home) }

// Region is one region: its key, its clients, its limiter and its health.
type Region struct {
	Name   string
	KeyARN string // as configured: key ARN or alias ARN
	Mode   string // config.ModeMRK or config.ModeIndependent

	kms      KMSAPI
	kmsFull  *kms.Client
	ddb      *dynamodb.Client
	sqs      *sqs.Client
	sts      *sts.Client
	s3       S3API
	bucket   string
	limiter  *kmsLimiter
	opts     Options
	observer Observer

	trust *keyTrust

	mu             sync.Mutex
	consecutive    int
	unhealthyUntil time.Time
	cooldown       time.Duration
	probing        bool // an unhealthy region's single probe call is in flight
	lastErr        error
}

func newRegion(rc config.Region, ac aws.Config, opts Options) *Region {
	// Every client gets request bodies the SDK cannot close under the transport (ownBodies).
	if ac.HTTPClient == nil {
		ac.HTTPClient = awshttp.NewBuildableClient() // what the SDK would use
	}
	ac.HTTPClient = ownBodies{next: ac.HTTPClient}
	kc := kms.NewFromConfig(ac, func(o *kms.Options) {
		if rc.Endpoints.KMS != "" {
			o.BaseEndpoint = aws.String(rc.Endpoints.KMS)
		}
		// Region.do retries KMS calls with its own limiter and backoff.
		o.Retryer = aws.NopRetryer{}
	})
	dc := dynamodb.NewFromConfig(ac, func(o *dynamodb.Options) {
		if rc.Endpoints.DynamoDB != "" {
			o.BaseEndpoint = aws.String(rc.Endpoints.DynamoDB)
		}
		// DynamoDB Local's error responses carry no valid checksum; the SDK would only warn.
		o.DisableValidateResponseChecksum = true
		o.Retryer = storageRetryer(opts)
		// Every attempt is bounded: a blackholed table endpoint fails in DynamoDBTimeout, not
		// in the HTTP client's 30 s, and is not retried (the region is then deferred).
		next := o.HTTPClient
		if next == nil {
			next = awshttp.NewBuildableClient()
		}
		o.HTTPClient = &attemptTimeout{next: next, service: "dynamodb", d: opts.DynamoDBTimeout}
	})
	sc := sqs.NewFromConfig(ac, func(o *sqs.Options) {
		if rc.Endpoints.SQS != "" {
			o.BaseEndpoint = aws.String(rc.Endpoints.SQS)
		}
		o.Retryer = storageRetryer(opts)
	})
	stc := sts.NewFromConfig(ac, func(o *sts.Options) {
		if rc.Endpoints.STS != "" {
			o.BaseEndpoint = aws.String(rc.Endpoints.STS)
		}
		o.Retryer = storageRetryer(opts)
	})
	return &Region{
		Name: rc.Name, KeyARN: rc.Key, Mode: rc.Mode,
		kms: kc, kmsFull: kc, ddb: dc, sqs: sc, sts: stc, bucket: rc.Bucket,
		s3:      newS3(ac, rc.Endpoints.S3, opts),
		limiter: newKMSLimiter(rc.KMSRate, opts.Now, opts.Jitter), opts: opts, observer: opts.Observer,
		trust: newKeyTrust(rc.Name, append([]string{rc.Key}, rc.PreviousKeys...), opts.TrustedKeys, opts.TrustAnyKey),
	}
}

// storageRetryer retries DynamoDB and SQS calls a few times (throttling, 5xx, a connection
// dropped under a reused keep-alive) without the SDK's client-side retry quota, which would turn a
// long outage into quota errors. KMS calls are retried by Region.do instead.
//
// The backoff is the same as Region.do's (BaseBackoff doubling, capped at MaxBackoff, ±30%
// jitter) instead of the SDK's default of up to 2^attempt seconds: under a brown-out (a share of
// 5xx answers) a read that succeeds on its second try should cost tens of milliseconds, not
// seconds.
func storageRetryer(opts Options) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 3
		o.RateLimiter = ratelimit.None
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, _ error) (time.Duration, error) {
			d := opts.MaxBackoff
			if attempt < 30 {
				d = min(opts.BaseBackoff<<attempt, opts.MaxBackoff)
			}
			return time.Duration(float64(d) * (0.7 + 0.6*mathrand.Float64())), nil
		})
		// A per-attempt timeout is not retried here: the caller defers the region instead of
		// waiting out two more timeouts.
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			var te *TimeoutError
			if errors.As(err, &te) {
				return aws.FalseTernary
			}
			return aws.UnknownTernary
		})}, o.Retryables...)
	})
}

// attemptTimeout bounds every HTTP attempt of a client (sending, the response headers and the
// body, until Close) to d, and reports running out of it as a *TimeoutError.
type attemptTimeout struct {
	next    aws.HTTPClient
	service string
	d       time.Duration
}

func (a *attemptTimeout) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), a.d)
	resp, err := a.next.Do(req.WithContext(ctx))
	if err != nil {
		timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded) && req.Context().Err() == nil
		cancel()
		if timedOut {
			return nil, &TimeoutError{Service: a.service, After: a.d}
		}
		return nil, err
	}
	resp.Body = &CancelOnClose{ReadCloser: resp.Body, Cancel: cancel}
	return resp, nil
}

// CancelOnClose releases a read's context when its body is closed: the context bounds the
// answer's arrival, and the body then streams for as long as its reader takes.
type CancelOnClose struct {
	io.ReadCloser
	Cancel context.CancelFunc
}

func (c *CancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.Cancel()
	return err
}

// NewRegionForTest builds a Region over a given KMS implementation (a fake in unit tests).
func NewRegionForTest(rc config.Region, k KMSAPI, opts Options) *Region {
	opts.withDefaults(&config.Config{})
	if rc.KMSRate == 0 {
		rc.KMSRate = 1e6
	}
	r := newRegion(rc, aws.Config{Region: rc.Name, Retryer: func() aws.Retryer { return aws.NopRetryer{} }}, opts)
	r.kms = k
	return r
}

// KMS returns the full KMS client for admin checks (doctor, rewrap), bound to this region.
func (r *Region) KMS() *kms.Client { return r.kmsFull }

// DynamoDB returns this region's DynamoDB client (the region's replica of the global table).
func (r *Region) DynamoDB() *dynamodb.Client { return r.ddb }

// SQS returns this region's SQS client.
func (r *Region) SQS() *sqs.Client { return r.sqs }

// Identity is the AWS identity the region's clients act as (STS GetCallerIdentity).
type Identity struct {
	Account string `json:"account"`
	ARN     string `json:"arn"`
	UserID  string `json:"user_id"`
}

// CallerIdentity asks this region's STS endpoint who the credentials belong to.
func (r *Region) CallerIdentity(ctx context.Context) (Identity, error) {
	out, err := r.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return Identity{}, fmt.Errorf("region %s: sts GetCallerIdentity: %w", r.Name, err)
	}
	return Identity{Account: aws.ToString(out.Account), ARN: aws.ToString(out.Arn), UserID: aws.ToString(out.UserId)}, nil
}

// Healthy reports whether the region is currently considered reachable.
func (r *Region) Healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.consecutive < r.opts.UnhealthyAfter
}

// LastError is the last failure seen in this region (nil after a success).
func (r *Region) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// available reports whether calls should be sent now: an unhealthy region's work is deferred at
// once instead of waiting on timeouts, and once its cool-down has passed a single call is let
// through as the probe (probe true; the caller must call endProbe) while the others stay
// deferred, so a region that still does not answer holds one call, not every worker.
func (r *Region) available(now time.Time) (ok, probe bool, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.consecutive < r.opts.UnhealthyAfter {
		return true, false, time.Time{}
	}
	if now.Before(r.unhealthyUntil) || r.probing {
		return false, false, r.unhealthyUntil
	}
	r.probing = true
	return true, true, time.Time{}
}

// coolingDown reports whether the region is marked unhealthy and its cool-down has not passed.
func (r *Region) coolingDown(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.consecutive >= r.opts.UnhealthyAfter && now.Before(r.unhealthyUntil)
}

func (r *Region) endProbe() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probing = false
}

// deferred is the error of a call not sent because the region is marked unhealthy.
func (r *Region) deferred(op, keyARN string, until time.Time) error {
	next := "a probe is in flight"
	if d := time.Until(until); d > 0 {
		next = "next probe in " + d.Round(time.Millisecond).String()
	}
	return &Error{Region: r.Name, Op: op, KeyARN: keyARN,
		Err: fmt.Errorf("%w: marked unhealthy after repeated failures, %s", ErrRegionUnavailable, next)}
}

// Call runs one call of this region that is not a KMS call (a DynamoDB read of the region's
// replica of the table, say) under the region's health: deferred at once while the region is
// marked unhealthy, and an unreachable answer (refused, reset, a per-attempt timeout) counts
// toward marking it so; any answer counts as reachable. f retries on its own (the SDK's).
func (r *Region) Call(ctx context.Context, op string, f func(context.Context) error) error {
	ok, probe, until := r.available(time.Now())
	if !ok {
		return r.deferred(op, "", until)
	}
	if probe {
		defer r.endProbe()
	}
	err := f(ctx)
	switch {
	case err == nil:
		r.noteReachable()
	case ctx.Err() != nil:
		// cancelled by the caller: says nothing about the region
	case IsConnError(err):
		r.noteUnreachable(err)
	default:
		r.noteReachable() // the region answered
	}
	return err
}

func (r *Region) noteUnreachable(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probing = false
	r.consecutive++
	r.lastErr = err
	if r.consecutive >= r.opts.UnhealthyAfter {
		now := time.Now()
		if now.Before(r.unhealthyUntil) {
			// Already cooling down: a straggler of the same burst (calls that were in flight
			// when the region went silent). Only a failed probe lengthens the cool-down, or a
			// burst of concurrent timeouts would push it to MaxCooldown at once and delay
			// noticing the region's return by that much.
			return
		}
		if r.cooldown == 0 {
			r.cooldown = 500 * time.Millisecond
		} else if r.cooldown *= 2; r.cooldown > r.opts.MaxCooldown {
			r.cooldown = r.opts.MaxCooldown
		}
		r.unhealthyUntil = now.Add(r.cooldown)
	}
}

func (r *Region) noteReachable() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.consecutive, r.cooldown, r.lastErr, r.probing = 0, 0, nil, false
}

// RateLimit is the region's current KMS request rate, requests/s: kms_rate, or less after
// throttling (limiter.go).
func (r *Region) RateLimit() float64 { return r.limiter.limit() }
