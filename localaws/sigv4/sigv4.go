// Package sigv4 verifies AWS Signature Version 4 on requests received by the local stand-in.
//
// It recomputes the signature the way a client computes it, following
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html:
// the canonical request (method, URI, query, the headers named in SignedHeaders, the signed
// header list, the payload hash), the string to sign (algorithm, X-Amz-Date, credential scope,
// hash of the canonical request), the signing key derived from the secret by HMAC over date,
// region, service and "aws4_request", and the HMAC-SHA256 signature. Only the headers the client
// lists in SignedHeaders take part, so headers a transport adds after signing (Accept-Encoding,
// say) do not break verification. Pure: no AWS SDK, no I/O.
//
// What a request must sign, from the same page ("Canonical headers") and each service's
// behaviour:
//   - host, and the date the signature is made for (x-amz-date, or date when the request uses
//     the Date header), must be among the signed headers; so must x-amz-target when the request
//     carries it (the JSON protocols of KMS, SQS and DynamoDB name the operation there: an
//     unsigned one could be swapped, Decrypt for GenerateDataKey, under a valid signature);
//   - the payload is always hashed: only S3 accepts "UNSIGNED-PAYLOAD" in x-amz-content-sha256
//     (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html); any other
//     service signs the body's SHA-256, so a request signed over "UNSIGNED-PAYLOAD", or over a
//     body altered after signing, fails as a signature mismatch;
//   - for S3, a body whose SHA-256 is not the x-amz-content-sha256 sent is
//     XAmzContentSHA256Mismatch (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Algorithm is the only signing algorithm accepted.
const Algorithm = "AWS4-HMAC-SHA256"

// MaxSkew is how far X-Amz-Date may be from the server's clock, as AWS allows.
const MaxSkew = 15 * time.Minute

// TimeFormat is the X-Amz-Date layout.
const TimeFormat = "20060102T150405Z"

// Kind classifies a verification failure; each service maps it to its own error code.
type Kind int

// Failure kinds.
const (
	// Missing: no Authorization header (MissingAuthenticationToken).
	Missing Kind = iota + 1
	// Incomplete: an Authorization header that does not parse (IncompleteSignature).
	Incomplete
	// WrongScope: signed for another region or service.
	WrongScope
	// UnknownKey: the access key ID is not known (UnrecognizedClient / InvalidClientTokenId).
	UnknownKey
	// Expired: X-Amz-Date more than MaxSkew from now.
	Expired
	// Mismatch: the signature does not match the one recomputed with the known secret.
	Mismatch
	// PayloadMismatch: S3 only, the body's SHA-256 is not x-amz-content-sha256
	// (XAmzContentSHA256Mismatch).
	PayloadMismatch
)

// Error is a verification failure. Message is the text AWS gives for the case.
type Error struct {
	Kind    Kind
	Message string
}

func (e *Error) Error() string { return e.Message }

// MismatchMessage is AWS's text for a wrong signature.
const MismatchMessage = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."

// UnknownKeyMessage is AWS's text for an access key it does not know.
const UnknownKeyMessage = "The security token included in the request is invalid."

// Auth is a parsed Authorization header.
type Auth struct {
	AccessKey, Date, Region, Service string
	SignedHeaders                    []string
	Signature                        string
}

// Scope is the credential scope DATE/REGION/SERVICE/aws4_request.
func (a Auth) Scope() string {
	return a.Date + "/" + a.Region + "/" + a.Service + "/aws4_request"
}

// ParseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex".
func ParseAuthorization(h string) (Auth, *Error) {
	var a Auth
	if h == "" {
		return a, &Error{Missing, "Missing Authentication Token"}
	}
	alg, rest, ok := strings.Cut(h, " ")
	if !ok || alg != Algorithm {
		return a, &Error{Incomplete, fmt.Sprintf("Unsupported AWS 'algorithm': '%s'", alg)}
	}
	fields := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok {
			fields[k] = v
		}
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return a, &Error{Incomplete, fmt.Sprintf("Authorization header requires '%s' parameter. Authorization=%s", k, h)}
		}
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[4] != "aws4_request" || cred[0] == "" {
		return a, &Error{Incomplete, "Credential should have five parts: ACCESS_KEY/DATE/REGION/SERVICE/aws4_request."}
	}
	a.AccessKey, a.Date, a.Region, a.Service = cred[0], cred[1], cred[2], cred[3]
	a.SignedHeaders = strings.Split(fields["SignedHeaders"], ";")
	a.Signature = fields["Signature"]
	return a, nil
}

// Verified is what a successful verification established.
type Verified struct {
	Auth
	Time time.Time
}

// Verify checks r's signature. body is the request body, already read (r.Body is not touched).
// secret returns the secret access key of an access key ID, false when unknown. region and
// service are what the endpoint serves: a request scoped to anything else is refused.
func Verify(r *http.Request, body []byte, region, service string, secret func(accessKey string) (string, bool), now time.Time) (*Verified, *Error) {
	a, e := ParseAuthorization(r.Header.Get("Authorization"))
	if e != nil {
		return nil, e
	}
	if a.Region != region {
		return nil, &Error{WrongScope, fmt.Sprintf("Credential should be scoped to a valid region, not '%s'. This endpoint serves '%s'.", a.Region, region)}
	}
	if a.Service != service {
		return nil, &Error{WrongScope, fmt.Sprintf("Credential should be scoped to correct service: '%s', not '%s'.", service, a.Service)}
	}
	key, ok := secret(a.AccessKey)
	if !ok {
		return nil, &Error{UnknownKey, UnknownKeyMessage}
	}
	if e := requireSigned(r, a.SignedHeaders); e != nil {
		return nil, e
	}
	amzDate := r.Header.Get("X-Amz-Date")
	var t time.Time
	if amzDate != "" {
		var err error
		if t, err = time.Parse(TimeFormat, amzDate); err != nil {
			return nil, &Error{Incomplete, fmt.Sprintf("X-Amz-Date %q is not in the format %s.", amzDate, TimeFormat)}
		}
	} else {
		d, err := http.ParseTime(r.Header.Get("Date"))
		if err != nil {
			return nil, &Error{Incomplete, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."}
		}
		t, amzDate = d.UTC(), d.UTC().Format(TimeFormat)
	}
	if t.Before(now.Add(-MaxSkew)) {
		return nil, &Error{Expired, fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - 15 min.)",
			amzDate, now.Add(-MaxSkew).UTC().Format(TimeFormat), now.UTC().Format(TimeFormat))}
	}
	if t.After(now.Add(MaxSkew)) {
		return nil, &Error{Expired, fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + 15 min.)",
			amzDate, now.Add(MaxSkew).UTC().Format(TimeFormat), now.UTC().Format(TimeFormat))}
	}
	if a.Date != amzDate[:8] {
		return nil, &Error{Mismatch, fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s'", a.Date, amzDate[:8])}
	}
	if e := checkPayload(r, body, service); e != nil {
		return nil, e
	}
	sig := Sign(key, a, StringToSign(amzDate, a.Scope(), canonicalRequest(r, body, a.SignedHeaders, service == "s3")))
	if !hmac.Equal([]byte(sig), []byte(a.Signature)) {
		return nil, &Error{Mismatch, MismatchMessage}
	}
	return &Verified{Auth: a, Time: t}, nil
}

// requireSigned refuses a signature that leaves out a header it must cover: host, the date
// header in use, and x-amz-target when sent.
func requireSigned(r *http.Request, signed []string) *Error {
	has := func(h string) bool {
		for _, s := range signed {
			if s == h {
				return true
			}
		}
		return false
	}
	if !has("host") {
		return &Error{Incomplete, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."}
	}
	switch {
	case r.Header.Get("X-Amz-Date") != "":
		if !has("x-amz-date") {
			return &Error{Incomplete, "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."}
		}
	case r.Header.Get("Date") != "":
		if !has("date") {
			return &Error{Incomplete, "'Date' must be a 'SignedHeader' in the AWS Authorization."}
		}
	}
	if r.Header.Get("X-Amz-Target") != "" && !has("x-amz-target") {
		return &Error{Incomplete, "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."}
	}
	return nil
}

// checkPayload applies S3's x-amz-content-sha256 rule: the header is required and, unless
// UNSIGNED-PAYLOAD, must be the body's SHA-256. Other services ignore what the header claims and
// hash the body (canonicalRequest), so a wrong claim surfaces as a signature mismatch, as on AWS.
func checkPayload(r *http.Request, body []byte, service string) *Error {
	if service != "s3" {
		return nil
	}
	claim := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case claim == "":
		return &Error{Incomplete, "Missing required header for this request: x-amz-content-sha256"}
	case claim == UnsignedPayload:
		return nil
	case claim == StreamingUnsignedTrailer:
		// The body is aws-chunked with a trailing checksum and no chunk signatures: the
		// signature covers the headers only, as with UNSIGNED-PAYLOAD. The backend decodes it.
		return nil
	case strings.HasPrefix(claim, "STREAMING-"):
		return &Error{Incomplete, "The stand-in does not verify chunked (" + claim + ") payloads."}
	}
	if h := sha256.Sum256(body); claim != hex.EncodeToString(h[:]) {
		return &Error{PayloadMismatch, "The provided 'x-amz-content-sha256' header does not match what was computed."}
	}
	return nil
}

// UnsignedPayload is the x-amz-content-sha256 value that leaves the body unsigned (S3 only).
const UnsignedPayload = "UNSIGNED-PAYLOAD"

// StreamingUnsignedTrailer is the x-amz-content-sha256 of an aws-chunked body with a trailing
// checksum and no chunk signatures (S3 only), which SDKs send for uploads of unknown length:
// https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html.
const StreamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

// CanonicalRequest builds the canonical request of r over the headers in signed (lower case, in
// the order given, which the client sorted), with the SHA-256 of body as the payload hash.
func CanonicalRequest(r *http.Request, body []byte, signed []string) string {
	return canonicalRequest(r, body, signed, false)
}

// canonicalRequest is CanonicalRequest; unsignedOK (S3) takes "UNSIGNED-PAYLOAD" from
// x-amz-content-sha256 as the payload hash.
func canonicalRequest(r *http.Request, body []byte, signed []string, unsignedOK bool) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL, unsignedOK))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery))
	b.WriteByte('\n')
	for _, h := range signed {
		b.WriteString(h)
		b.WriteByte(':')
		b.WriteString(headerValue(r, h))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash(r, body, unsignedOK))
	return b.String()
}

// StringToSign is "AWS4-HMAC-SHA256\nDATE\nSCOPE\nhex(sha256(canonical request))".
func StringToSign(amzDate, scope, canonical string) string {
	h := sha256.Sum256([]byte(canonical))
	return Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(h[:])
}

// Sign derives the signing key from secret and a's scope and signs stringToSign.
func Sign(secret string, a Auth, stringToSign string) string {
	k := hmacSHA256([]byte("AWS4"+secret), a.Date)
	k = hmacSHA256(k, a.Region)
	k = hmacSHA256(k, a.Service)
	k = hmacSHA256(k, "aws4_request")
	return hex.EncodeToString(hmacSHA256(k, stringToSign))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func payloadHash(r *http.Request, body []byte, unsignedOK bool) string {
	if v := r.Header.Get("X-Amz-Content-Sha256"); unsignedOK && (v == UnsignedPayload || v == StreamingUnsignedTrailer) {
		return v
	}
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

func headerValue(r *http.Request, name string) string {
	var vals []string
	switch name {
	case "host":
		vals = []string{r.Host}
	case "content-length":
		vals = r.Header.Values("Content-Length")
		if len(vals) == 0 && r.ContentLength >= 0 {
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	default:
		vals = r.Header.Values(name)
	}
	for i, v := range vals {
		vals[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(vals, ",")
}

// canonicalURI is the URI-encoded path; every service but S3 encodes each segment twice, i.e.
// the already escaped path is escaped again. S3 (s3 true) encodes the decoded path once: an
// object key "a b" is signed as /bucket/a%20b, not /bucket/a%2520b
// (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, "CanonicalURI").
func canonicalURI(u *url.URL, s3 bool) string {
	p := u.EscapedPath()
	if s3 {
		p = u.Path
	}
	if p == "" {
		return "/"
	}
	return uriEncode(p, false)
}

func canonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return raw
	}
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

// uriEncode encodes every byte but the unreserved characters A-Z a-z 0-9 - _ . ~ (and '/' unless
// encodeSlash), as SigV4 requires.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
