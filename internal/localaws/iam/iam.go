// Package iam is the local stand-in's identity and access management: the identities (one
// access key and secret per role, written to an AWS shared-credentials file), their identity
// policies (replaceable at run time through the admin endpoint), SigV4 verification of every
// request (package sigv4) and policy evaluation (package iampolicy) for KMS, SQS and DynamoDB.
//
// All identities are roles of one account, Account. What they may do is what their identity
// policies (and, for KMS, the key policies) allow, evaluated as AWS does; envdr-admin has
// Allow * on *, envdr-nobody no policy at all.
package iam

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envdr/envdr/internal/localaws/iampolicy"
	"github.com/envdr/envdr/internal/localaws/sigv4"
	"github.com/envdr/envdr/policy"
)

// Account is the stand-in's AWS account: KMS key ARNs, DynamoDB table ARNs and role ARNs. (SQS
// queue URLs and ARNs carry fauxqs' fixed 000000000000; see QueueARN.)
const Account = "111122223333"

// The admin identity's fixed credentials: what local/envdr.yaml's local section carries and what
// callers that choose no profile sign with.
const (
	AdminAccessKey = "AKIAENVDRLOCAL000000"
	AdminSecretKey = "envdr-local-secret-not-a-secret"
)

// Role names; each profile in the credentials file is named after its role.
const (
	RoleAdmin    = "envdr-admin"
	RoleDaemon   = "envdr-daemon"
	RoleProducer = "envdr-producer"
	RoleOperator = "envdr-operator"
	RoleRewrap   = "envdr-rewrap"
	RoleNobody   = "envdr-nobody"
	// The roles policy render adds (each rendered iam-NAME.json becomes role envdr-NAME).
	RoleDrill    = "envdr-drill"
	RoleFailover = "envdr-failover"
	RoleGameday  = "envdr-gameday"
)

// Identity is one principal: a role with its access key.
type Identity struct {
	Role      string // role name, also the profile name
	AccessKey string
	SecretKey string
}

// ARN is the role ARN (what aws:PrincipalArn holds and key policies name).
func (i Identity) ARN() string { return "arn:aws:iam::" + Account + ":role/" + i.Role }

// SessionARN is the assumed-role ARN AWS names in AccessDenied messages.
func (i Identity) SessionARN() string {
	return "arn:aws:sts::" + Account + ":assumed-role/" + i.Role + "/envdr-local"
}

// DefaultIdentities are the stand-in's roles. The keys are fixed, like the admin's: the stand-in
// guards nothing worth a secret, and fixed keys keep local/credentials the same on every run.
// AddRole adds more (the roles `envdr policy render` renders policies for).
func DefaultIdentities() []Identity {
	out := []Identity{{Role: RoleAdmin, AccessKey: AdminAccessKey, SecretKey: AdminSecretKey}}
	for _, r := range []string{RoleDaemon, RoleProducer, RoleOperator, RoleRewrap, RoleNobody} {
		out = append(out, NewIdentity(r))
	}
	return out
}

// NewIdentity is the identity of a role with its fixed keys, derived from the role name:
// envdr-daemon signs with AKIAENVDRDAEMON00000. Access keys are 20 letters and digits (DynamoDB
// Local accepts nothing else); a long name is shortened with a hash so keys stay distinct.
func NewIdentity(role string) Identity {
	tag := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return -1
	}, strings.TrimPrefix(role, "envdr-"))
	const room = 20 - len("AKIAENVDR")
	if len(tag) > room {
		h := sha256.Sum256([]byte(role))
		tag = tag[:room-4] + strings.ToUpper(hex.EncodeToString(h[:2]))
	}
	ak := "AKIAENVDR" + tag + strings.Repeat("0", room-len(tag))
	return Identity{Role: role, AccessKey: ak, SecretKey: "envdr-local-" + strings.ToLower(tag) + "-secret"}
}

// AddRole adds a role (NewIdentity) unless it exists; it has no policy until SetPolicy.
func (m *IAM) AddRole(role string) Identity {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, ok := m.byRole[role]; ok {
		return id
	}
	id := NewIdentity(role)
	m.byKey[id.AccessKey] = id
	m.byRole[role] = id
	return id
}

// AdminPolicy allows everything.
func AdminPolicy() *policy.Document {
	return &policy.Document{Version: policy.Version, Statement: []policy.Statement{{Sid: "Admin", Effect: "Allow", Action: policy.Strings{"*"}, Resource: policy.Strings{"*"}}}}
}

// IAM holds identities and identity policies. Safe for concurrent use.
type IAM struct {
	now func() time.Time

	mu       sync.RWMutex
	byKey    map[string]Identity
	byRole   map[string]Identity
	policies map[string][]*policy.Document // role -> attached identity policies
}

// New returns an IAM with DefaultIdentities; only the admin has a policy until SetPolicy.
func New() *IAM {
	m := &IAM{now: time.Now, byKey: map[string]Identity{}, byRole: map[string]Identity{}, policies: map[string][]*policy.Document{}}
	for _, id := range DefaultIdentities() {
		m.byKey[id.AccessKey] = id
		m.byRole[id.Role] = id
	}
	m.policies[RoleAdmin] = []*policy.Document{AdminPolicy()}
	return m
}

// Identities lists the identities by role name.
func (m *IAM) Identities() []Identity {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Identity, 0, len(m.byRole))
	for _, id := range m.byRole {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role < out[j].Role })
	return out
}

// Identity returns a role's identity.
func (m *IAM) Identity(role string) (Identity, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	id, ok := m.byRole[role]
	return id, ok
}

// SetPolicy replaces a role's identity policies (none: the role may do nothing). A document the
// stand-in cannot evaluate exactly (iampolicy.Validate) is refused, naming what it cannot.
func (m *IAM) SetPolicy(role string, docs ...*policy.Document) error {
	for i, d := range docs {
		if err := iampolicy.Validate(d, iampolicy.Identity); err != nil {
			return fmt.Errorf("iam: role %s: policy document %d: %w", role, i, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byRole[role]; !ok {
		return fmt.Errorf("iam: no role %q", role)
	}
	m.policies[role] = append([]*policy.Document(nil), docs...)
	return nil
}

// Policy returns a role's identity policies.
func (m *IAM) Policy(role string) ([]*policy.Document, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, ok := m.byRole[role]; !ok {
		return nil, false
	}
	return append([]*policy.Document(nil), m.policies[role]...), true
}

func (m *IAM) secret(accessKey string) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	id, ok := m.byKey[accessKey]
	return id.SecretKey, ok
}

// WriteCredentials writes an AWS shared-credentials file with one profile per identity (0600).
func (m *IAM) WriteCredentials(path string) error {
	var b bytes.Buffer
	b.WriteString("# Written by the envdr local stand-in: one profile per role, account " + Account + ".\n" +
		"# AWS_SHARED_CREDENTIALS_FILE=" + path + " AWS_PROFILE=envdr-daemon envdr run ...\n")
	for _, id := range m.Identities() {
		fmt.Fprintf(&b, "\n[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id.Role, id.AccessKey, id.SecretKey)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

type ctxKey struct{}

// FromContext returns the authenticated identity of a request.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// ErrorWriter answers an authentication failure in a service's error shape.
type ErrorWriter func(w http.ResponseWriter, e *sigv4.Error)

// maxBody bounds what the middleware buffers (DynamoDB's item batches are the largest).
const maxBody = 16 << 20

// Authenticate verifies every request's SigV4 signature for region and service against the
// identities' secrets, and passes it on with its Identity in the context; failures are answered
// by fail in the service's own error shape.
func (m *IAM) Authenticate(region, service string, fail ErrorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			return // the client went away
		}
		v, e := sigv4.Verify(r, body, region, service, m.secret, m.now())
		if e != nil {
			fail(w, e)
			return
		}
		m.mu.RLock()
		id := m.byKey[v.AccessKey]
		m.mu.RUnlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}

// Check is one authorization question about an authenticated caller.
type Check struct {
	Action, Resource string
	// Context holds service-specific condition keys (kms:EncryptionContextKeys, ...); the
	// global ones (aws:PrincipalArn, aws:RequestedRegion, ...) are added.
	Context map[string][]string
	// KeyPolicy is the KMS key policy; nil for identity-only services.
	KeyPolicy *string
	// SourceIP is the caller's address (aws:SourceIp); empty when unknown.
	SourceIP string
}

// Decide evaluates c for id in region. The message, for a denial, is AWS's:
// "User: ARN is not authorized to perform: ACTION on resource: RESOURCE because ...".
func (m *IAM) Decide(id Identity, region string, c Check) (iampolicy.Result, string) {
	now := m.now().UTC()
	ctx := map[string][]string{
		"aws:PrincipalArn":     {id.ARN()},
		"aws:PrincipalAccount": {Account},
		"aws:PrincipalType":    {"AssumedRole"},
		"aws:RequestedRegion":  {region},
		"aws:SecureTransport":  {"false"},
		// The request time, which Date conditions compare (aws:CurrentTime in ISO 8601,
		// aws:EpochTime in seconds: reference_policies_condition-keys.html).
		"aws:CurrentTime": {now.Format(time.RFC3339)},
		"aws:EpochTime":   {strconv.FormatInt(now.Unix(), 10)},
	}
	if c.SourceIP != "" {
		ctx["aws:SourceIp"] = []string{c.SourceIP}
	}
	if strings.HasPrefix(c.Action, "kms:") {
		ctx["kms:CallerAccount"] = []string{Account}
	}
	for k, v := range c.Context {
		ctx[k] = v
	}
	req := iampolicy.Request{Principal: id.ARN(), Session: id.SessionARN(), Account: Account, Action: c.Action, Resource: c.Resource, Context: ctx}
	docs, _ := m.Policy(id.Role)
	var res iampolicy.Result
	if c.KeyPolicy != nil {
		kp, err := ParseKeyPolicy(*c.KeyPolicy)
		if err != nil {
			kp = nil // unparseable: it allows nothing (PutKeyPolicy refuses such a policy)
		}
		res = iampolicy.EvaluateKMS(req, kp, docs)
	} else {
		res = iampolicy.EvaluateIdentity(req, docs)
	}
	if res.Allowed() {
		return res, ""
	}
	return res, fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", id.SessionARN(), c.Action, c.Resource, res.Why)
}

// Authorize decides a KMS call for the KMS stand-in (its Authorizer): the denial message,
// whether it is an explicit deny, and false when the request carries no identity.
func (m *IAM) Authorize(r *http.Request, region, action, resource string, keyPolicy *string, ctx map[string][]string) (string, bool, bool) {
	id, found := FromContext(r.Context())
	if !found {
		return "", false, false
	}
	res, msg := m.Decide(id, region, Check{Action: action, Resource: resource, KeyPolicy: keyPolicy, Context: ctx, SourceIP: sourceIP(r)})
	return msg, res.Decision == iampolicy.ExplicitDeny, true
}

// Principal is the role ARN of an authenticated request's caller.
func (m *IAM) Principal(r *http.Request) (string, bool) {
	id, ok := FromContext(r.Context())
	return id.ARN(), ok
}

// AuthorizeRequest is Decide for the identity of an authenticated request. ok is false when the
// request carries no identity (a handler served without Authenticate, as unit tests do): then
// nothing is checked.
func (m *IAM) AuthorizeRequest(r *http.Request, region string, c Check) (denied string, ok bool) {
	id, found := FromContext(r.Context())
	if !found {
		return "", false
	}
	if c.SourceIP == "" {
		c.SourceIP = sourceIP(r)
	}
	_, msg := m.Decide(id, region, c)
	return msg, true
}

// sourceIP is the caller's address, as aws:SourceIp has it.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// ParseKeyPolicy parses a KMS key policy and checks the stand-in can evaluate it
// (iampolicy.Validate): the KMS stand-in refuses any other with MalformedPolicyDocumentException.
func ParseKeyPolicy(s string) (*policy.Document, error) {
	d, err := policy.Parse([]byte(s))
	if err != nil {
		return nil, err
	}
	if err := iampolicy.Validate(d, iampolicy.Resource); err != nil {
		return nil, err
	}
	return d, nil
}

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

// Simulate evaluates a request as the named role would make it, like iam:SimulatePrincipalPolicy.
func (m *IAM) Simulate(s SimulateRequest) (SimulateResult, error) {
	id, ok := m.Identity(s.Role)
	if !ok {
		return SimulateResult{}, fmt.Errorf("iam: no role %q", s.Role)
	}
	res, msg := m.Decide(id, s.Region, Check{Action: s.Action, Resource: s.Resource, Context: s.Context, KeyPolicy: s.KeyPolicy})
	return SimulateResult{Allowed: res.Allowed(), Decision: res.Decision.String(), Statement: res.Statement, Message: msg}, nil
}

// Handler serves the IAM part of the admin endpoint:
//
//	GET  /iam/roles                    roles with their ARNs and access keys (no secrets)
//	GET  /iam/roles/{role}/policy      the role's identity policies, a JSON array
//	PUT  /iam/roles/{role}/policy      replace them: one document or an array; [] removes all
//	POST /iam/simulate                 SimulateRequest -> SimulateResult
func (m *IAM) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /iam/roles", func(w http.ResponseWriter, r *http.Request) {
		type role struct {
			Role, ARN, AccessKey string
		}
		var out []role
		for _, id := range m.Identities() {
			out = append(out, role{id.Role, id.ARN(), id.AccessKey})
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /iam/roles/{role}/policy", func(w http.ResponseWriter, r *http.Request) {
		docs, ok := m.Policy(r.PathValue("role"))
		if !ok {
			http.Error(w, "no such role", http.StatusNotFound)
			return
		}
		if docs == nil {
			docs = []*policy.Document{}
		}
		writeJSON(w, docs)
	})
	mux.HandleFunc("PUT /iam/roles/{role}/policy", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		docs, err := ParseDocuments(b)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for i, d := range docs {
			if err := iampolicy.Validate(d, iampolicy.Identity); err != nil {
				http.Error(w, fmt.Sprintf("document %d: %v", i, err), http.StatusBadRequest)
				return
			}
		}
		if err := m.SetPolicy(r.PathValue("role"), docs...); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, map[string]any{"role": r.PathValue("role"), "documents": len(docs)})
	})
	mux.HandleFunc("POST /iam/simulate", func(w http.ResponseWriter, r *http.Request) {
		var s SimulateRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&s); err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := m.Simulate(s)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, res)
	})
}

// ParseDocuments parses one policy document or a JSON array of them (strictly, as policy.Parse).
func ParseDocuments(b []byte) ([]*policy.Document, error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return nil, fmt.Errorf("policy documents: %w", err)
		}
		out := make([]*policy.Document, 0, len(raw))
		for i, r := range raw {
			d, err := policy.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", i, err)
			}
			out = append(out, d)
		}
		return out, nil
	}
	d, err := policy.Parse(b)
	if err != nil {
		return nil, err
	}
	return []*policy.Document{d}, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
