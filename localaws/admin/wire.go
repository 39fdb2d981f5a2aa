package admin

// Service names, as in SigV4 credential scopes.
const (
	ServiceKMS      = "kms"
	ServiceSQS      = "sqs"
	ServiceDynamoDB = "dynamodb"
	// ServiceSTS is served on each region's KMS port (GetCallerIdentity only).
	ServiceSTS = "sts"
	// ServiceS3 is the region's S3 endpoint (path-style, over fauxqs' S3).
	ServiceS3 = "s3"
)

// Services lists the per-region services in a fixed order.
var Services = []string{ServiceKMS, ServiceSQS, ServiceDynamoDB, ServiceS3}

// RegionStatus is one region's state, as the admin endpoint reports it.
type RegionStatus struct {
	Up        bool          `json:"up"`
	Endpoints EndpointsJSON `json:"endpoints"`
	// Faults are the region's active gray failures by service (absent: none).
	Faults map[string]Fault `json:"faults,omitempty"`
	// ClockSkew is the offset of the region's write clock, which stamps its global-table
	// writes for last writer wins (absent: none).
	ClockSkew string `json:"clock_skew,omitempty"`
}

// EndpointsJSON is config.Endpoints with lower-case JSON names, as in the YAML config.
type EndpointsJSON struct {
	KMS      string `json:"kms"`
	SQS      string `json:"sqs"`
	DynamoDB string `json:"dynamodb"`
	STS      string `json:"sts"`
	S3       string `json:"s3,omitempty"`
}

// PairStats are one replication direction's counters.
type PairStats struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Lag is the configured delay before a change is applied at To; each change waits Lag plus
	// a random share of Jitter (uniform in [0, Jitter], drawn per item and destination).
	Lag    string `json:"lag"`
	Jitter string `json:"jitter"`
	// Replicated counts changes applied at To; Conflicts those discarded because To held a
	// newer write of the item (last writer wins).
	Replicated int64 `json:"replicated"`
	Conflicts  int64 `json:"conflicts"`
	// Writes counts the BatchWriteItem requests sent to To's replica to apply them (up to 25
	// changes each; re-sent unprocessed items count again).
	Writes int64 `json:"writes"`
	// Pending changes are waiting for their lag to pass or for a region to come back.
	Pending int `json:"pending"`
	// ReplicationLatency, as CloudWatch's metric of that name: the time from a write at From to
	// its arrival at To, for the last change and the largest seen, in milliseconds.
	LastLatencyMs float64 `json:"replication_latency_last_ms"`
	MaxLatencyMs  float64 `json:"replication_latency_max_ms"`
}

// DefaultBasePort is the first of the stand-in's fixed ports (the stand-in's Ports), chosen so that
// local/envdr.yaml is the same on every run, and below Linux's ephemeral range (32768-60999) so
// that a busy machine's outgoing connections never hold one of them.
const DefaultBasePort = 24660

// ConfigFile is the config `envdr-local` writes inside its directory.
const ConfigFile = "envdr.yaml"

// RoleDaemon is the stand-in's IAM role for the replication daemon, whose permissions
// `envdr doctor` simulates (POST /iam/simulate).
const RoleDaemon = "envdr-daemon"

// SimulateRequest is the body of POST /iam/simulate (the stand-in serves it; `envdr doctor`
// sends it, recovery/permissions.go).
type SimulateRequest struct {
	Role     string              `json:"role"`
	Region   string              `json:"region"`
	Action   string              `json:"action"`
	Resource string              `json:"resource"`
	Context  map[string][]string `json:"context,omitempty"`
	// KeyPolicy, when set, is evaluated as the key policy of a KMS key.
	KeyPolicy *string `json:"key_policy,omitempty"`
}

// SimulateResult answers POST /iam/simulate.
type SimulateResult struct {
	Allowed   bool   `json:"allowed"`
	Decision  string `json:"decision"`
	Statement string `json:"statement,omitempty"`
	Message   string `json:"message,omitempty"`
}

// S3PairStats are one S3 replication direction's counters.
type S3PairStats struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Replicated counts versions copied to To; Conflicts those discarded because To held a
	// newer version; Superseded those skipped because the source had replaced them already.
	Replicated int64 `json:"replicated"`
	Conflicts  int64 `json:"conflicts"`
	Superseded int64 `json:"superseded"`
	// Pending versions wait for their lag or for a region to come back.
	Pending int `json:"pending"`
	// Latency from the write to the replica's arrival, last and largest, in milliseconds.
	LastLatencyMs float64 `json:"replication_latency_last_ms"`
	MaxLatencyMs  float64 `json:"replication_latency_max_ms"`
}

// S3Status is what GET /s3 reports.
type S3Status struct {
	// Buckets maps each bucket to its region.
	Buckets map[string]string `json:"buckets"`
	// Replication is every direction's counters.
	Replication []S3PairStats `json:"replication"`
	// Notifications are the event messages sent to each region's queues, the batches that
	// failed (and were retried), and those waiting.
	NotificationsSent    map[string]int64 `json:"notifications_sent"`
	NotificationsFailed  map[string]int64 `json:"notifications_failed"`
	NotificationsPending map[string]int   `json:"notifications_pending"`
}
