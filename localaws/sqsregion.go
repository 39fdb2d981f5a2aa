package localaws

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
)

// regionalQueues keeps a region's SQS endpoint to that region's queues, as in AWS, where a queue
// lives in one region and another region's endpoint does not know it. fauxqs keeps queues per
// signing region but answers ListQueues with every region's queues and may resolve a queue URL
// of another region; this filter refuses the one and trims the other.
//
// Queue URLs name their region in the host (http://sqs.REGION.localhost:PORT/ACCOUNT/NAME).
func regionalQueues(region string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		var req struct{ QueueUrl string }
		_ = json.Unmarshal(body, &req)
		if req.QueueUrl != "" {
			if qr := queueRegion(req.QueueUrl); qr != "" && qr != region {
				writeSQSNonExistentQueue(w)
				return
			}
		}
		if !strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".ListQueues") {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		out := rec.Body.Bytes()
		if rec.Code == http.StatusOK {
			var list map[string]any
			if json.Unmarshal(out, &list) == nil {
				if urls, ok := list["QueueUrls"].([]any); ok {
					kept := []any{}
					for _, u := range urls {
						if s, _ := u.(string); queueRegion(s) == region || queueRegion(s) == "" {
							kept = append(kept, u)
						}
					}
					list["QueueUrls"] = kept
					out, _ = json.Marshal(list)
				}
			}
		}
		for k, v := range rec.Header() {
			if !strings.EqualFold(k, "Content-Length") {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(out)
	})
}

// queueRegion is the region a queue URL's host names, or "" when it names none.
func queueRegion(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	p := strings.Split(u.Hostname(), ".")
	if len(p) >= 3 && p[0] == "sqs" {
		return p[1]
	}
	return ""
}

// writeSQSNonExistentQueue answers as SQS does for a queue that is not in this region:
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html
// (QueueDoesNotExist, query code AWS.SimpleQueueService.NonExistentQueue, HTTP 400).
func writeSQSNonExistentQueue(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("X-Amzn-Query-Error", "AWS.SimpleQueueService.NonExistentQueue;Sender")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, `{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}`)
}
