package localaws

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/sigv4"
)

// Authentication failures, answered with each service's code and HTTP status:
//   - KMS (https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html) and DynamoDB
//     (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/CommonErrors.html):
//     UnrecognizedClientException, InvalidSignatureException (also "Signature expired"),
//     IncompleteSignatureException, MissingAuthenticationTokenException, HTTP 400;
//   - SQS (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html):
//     InvalidClientTokenId and MissingAuthenticationToken HTTP 403, SignatureDoesNotMatch HTTP
//     403 (also for an expired signature), IncompleteSignature HTTP 400.

func jsonAuthCode(k sigv4.Kind) string {
	switch k {
	case sigv4.Missing:
		return "MissingAuthenticationTokenException"
	case sigv4.Incomplete:
		return "IncompleteSignatureException"
	case sigv4.UnknownKey:
		return "UnrecognizedClientException"
	}
	return "InvalidSignatureException"
}

func kmsAuthError(w http.ResponseWriter, e *sigv4.Error) {
	writeAWSError(w, http.StatusBadRequest, jsonAuthCode(e.Kind), e.Message)
}

func ddbAuthError(w http.ResponseWriter, e *sigv4.Error) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("X-Amzn-ErrorType", jsonAuthCode(e.Kind))
	w.WriteHeader(http.StatusBadRequest)
	_, _ = fmt.Fprintf(w, `{"__type":"com.amazon.coral.service#%s","message":%q}`, jsonAuthCode(e.Kind), e.Message)
}

func sqsAuthError(w http.ResponseWriter, e *sigv4.Error) {
	code, status := "SignatureDoesNotMatch", http.StatusForbidden
	switch e.Kind {
	case sigv4.Missing:
		code = "MissingAuthenticationToken"
	case sigv4.Incomplete:
		code, status = "IncompleteSignature", http.StatusBadRequest
	case sigv4.UnknownKey:
		code = "InvalidClientTokenId"
	}
	writeSQSError(w, status, code, e.Message)
}

// writeSQSError answers in the SQS JSON protocol's error shape with the query-compatible code
// the SDKs report (X-Amzn-Query-Error).
func writeSQSError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("X-Amzn-Query-Error", code+";Sender")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":"com.amazonaws.sqs#%s","message":%q}`, code, msg)
}

// readBody reads a request body that Authenticate already buffered, and puts it back.
func readBody(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// QueueARN is the ARN of a queue URL as the stand-in (and `envdr policy render`) sees it:
// arn:aws:sqs:REGION:ACCOUNT:NAME with the region from the host (sqs.REGION.localhost) and the
// account from the path, which for fauxqs' queues is always 000000000000.
func QueueARN(region, queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return queueURL
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 {
		return queueURL
	}
	if r := queueRegion(queueURL); r != "" {
		region = r
	}
	return fmt.Sprintf("arn:aws:sqs:%s:%s:%s", region, parts[0], parts[1])
}

// fauxqsAccount is the account ID fauxqs puts in every queue URL and ARN.
const fauxqsAccount = "000000000000"

// sqsActions maps batch operations to the action IAM authorizes them as.
var sqsActions = map[string]string{
	"SendMessageBatch":             "sqs:SendMessage",
	"DeleteMessageBatch":           "sqs:DeleteMessage",
	"ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}

// authorizeSQS evaluates the caller's identity policies for the SQS action of X-Amz-Target on
// the queue of QueueUrl (or QueueName); a denial answers AccessDenied (HTTP 403).
func authorizeSQS(m *iam.IAM, region string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSQS.")
		action := sqsActions[op]
		if action == "" {
			action = "sqs:" + op
		}
		var req struct{ QueueUrl, QueueName string }
		_ = json.Unmarshal(readBody(r), &req)
		resource := "*"
		switch {
		case req.QueueUrl != "":
			resource = QueueARN(region, req.QueueUrl)
		case req.QueueName != "":
			resource = fmt.Sprintf("arn:aws:sqs:%s:%s:%s", region, fauxqsAccount, req.QueueName)
		}
		if msg, ok := m.AuthorizeRequest(r, region, iam.Check{Action: action, Resource: resource}); ok && msg != "" {
			writeSQSError(w, http.StatusForbidden, "AccessDenied", msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TableARN is a DynamoDB table's ARN in the stand-in's account.
func TableARN(region, table string) string {
	return fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", region, iam.Account, table)
}

// ddbChecks lists the (action, table) pairs a DynamoDB request needs, as IAM authorizes them:
// one action per operation, except TransactWriteItems and TransactGetItems, which need the
// action of each item's operation on its table
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
func ddbChecks(op string, body []byte) [][2]string {
	var req struct {
		TableName     string
		RequestItems  map[string]json.RawMessage
		TransactItems []map[string]struct{ TableName string }
	}
	_ = json.Unmarshal(body, &req)
	var out [][2]string
	switch {
	case op == "TransactWriteItems" || op == "TransactGetItems":
		actions := map[string]string{"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
		seen := map[[2]string]bool{}
		for _, it := range req.TransactItems {
			for kind, v := range it {
				c := [2]string{"dynamodb:" + actions[kind], v.TableName}
				if !seen[c] {
					seen[c] = true
					out = append(out, c)
				}
			}
		}
	case len(req.RequestItems) > 0:
		var tables []string
		for t := range req.RequestItems {
			tables = append(tables, t)
		}
		sort.Strings(tables)
		for _, t := range tables {
			out = append(out, [2]string{"dynamodb:" + op, t})
		}
	default:
		out = append(out, [2]string{"dynamodb:" + op, req.TableName})
	}
	return out
}

// authorizeDynamoDB evaluates the caller's identity policies for a DynamoDB request; a denial
// answers AccessDeniedException (HTTP 400).
func authorizeDynamoDB(m *iam.IAM, region string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), ddbTargetPrefix)
		for _, c := range ddbChecks(op, readBody(r)) {
			resource := "*"
			if c[1] != "" {
				resource = TableARN(region, c[1])
			}
			if msg, ok := m.AuthorizeRequest(r, region, iam.Check{Action: c[0], Resource: resource}); ok && msg != "" {
				writeDDBError(w, http.StatusBadRequest, "AccessDeniedException", msg)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
