package localaws

import (
	"encoding/xml"
	"net/http"
	"net/url"

	"github.com/envdr/envdr/internal/localaws/kms"
)

// scopedHandler serves the requests an endpoint receives signed for another service.
type scopedHandler struct {
	service string
	handler http.Handler
}

// StandInCaller is the IAM identity the stand-in's STS reports for every request (no IAM: the
// fake credentials all belong to it).
const StandInCaller = "user/envdr-local"

// stsService answers STS GetCallerIdentity (AWS query protocol, XML) on a region's KMS port, so
// drill reports on the stand-in record a caller and account as they do in AWS. Every other STS
// action is refused.
func stsService(account string) scopedHandler {
	if account == "" {
		account = kms.DefaultAccount
	}
	type result struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	}
	type response struct {
		XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetCallerIdentityResponse"`
		Result  result   `xml:"GetCallerIdentityResult"`
		Meta    struct {
			RequestID string `xml:"RequestId"`
		} `xml:"ResponseMetadata"`
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			writeSTSError(w, http.StatusBadRequest, "InvalidQueryParameter", err.Error())
			return
		}
		if a := r.PostForm.Get("Action"); a != "GetCallerIdentity" {
			writeSTSError(w, http.StatusBadRequest, "InvalidAction",
				"envdr local stand-in: STS answers GetCallerIdentity only, not "+url.QueryEscape(a))
			return
		}
		var out response
		out.Result = result{Arn: "arn:aws:iam::" + account + ":" + StandInCaller, UserID: AccessKey, Account: account}
		out.Meta.RequestID = "envdr-local"
		w.Header().Set("Content-Type", "text/xml")
		_, _ = w.Write([]byte(xml.Header))
		_ = xml.NewEncoder(w).Encode(out)
	})
	return scopedHandler{service: ServiceSTS, handler: h}
}

// writeSTSError answers in the query protocol's XML error shape.
func writeSTSError(w http.ResponseWriter, status int, code, msg string) {
	type errBody struct {
		XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
		Error   struct {
			Type    string `xml:"Type"`
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		} `xml:"Error"`
	}
	var e errBody
	e.Error.Type, e.Error.Code, e.Error.Message = "Sender", code, msg
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	_ = xml.NewEncoder(w).Encode(e)
}
