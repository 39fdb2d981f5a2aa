package localaws

import (
	"encoding/xml"
	"net/http"
	"net/url"
	"strings"

	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/sigv4"
)

// kmsWithSTS serves a region's KMS port: requests signed for STS go to GetCallerIdentity (so drill
// reports on the stand-in record a caller and account as they do in AWS), the rest to KMS. Both
// are authenticated by m (SigV4 against the caller's secret).
func kmsWithSTS(m *iam.IAM, region string, kmsHandler http.Handler) http.Handler {
	toKMS := m.Authenticate(region, ServiceKMS, kmsAuthError, kmsHandler)
	toSTS := m.Authenticate(region, ServiceSTS, stsAuthError, stsCallerIdentity())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if signedService(r.Header.Get("Authorization")) == ServiceSTS {
			toSTS.ServeHTTP(w, r)
			return
		}
		toKMS.ServeHTTP(w, r)
	})
}

// signedService is the service of a SigV4 Authorization header's credential scope
// ("Credential=AKID/DATE/REGION/SERVICE/aws4_request"), or "".
func signedService(auth string) string {
	_, rest, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return ""
	}
	cred, _, _ := strings.Cut(rest, ",")
	p := strings.Split(strings.TrimSpace(cred), "/")
	if len(p) != 5 {
		return ""
	}
	return p[3]
}

// stsAuthError answers a failed signature check in STS's query-protocol XML.
func stsAuthError(w http.ResponseWriter, e *sigv4.Error) {
	code := "SignatureDoesNotMatch"
	if e.Kind == sigv4.UnknownKey {
		code = "InvalidClientTokenId"
	}
	writeSTSError(w, http.StatusForbidden, code, e.Message)
}

// stsCallerIdentity answers STS GetCallerIdentity with the authenticated caller: its assumed-role
// ARN, access key and account. Every other STS action is refused.
func stsCallerIdentity() http.Handler {
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			writeSTSError(w, http.StatusBadRequest, "InvalidQueryParameter", err.Error())
			return
		}
		if a := r.PostForm.Get("Action"); a != "GetCallerIdentity" {
			writeSTSError(w, http.StatusBadRequest, "InvalidAction",
				"envdr local stand-in: STS answers GetCallerIdentity only, not "+url.QueryEscape(a))
			return
		}
		id, _ := iam.FromContext(r.Context())
		var out response
		out.Result = result{Arn: id.SessionARN(), UserID: id.AccessKey + ":envdr-local", Account: iam.Account}
		out.Meta.RequestID = "envdr-local"
		w.Header().Set("Content-Type", "text/xml")
		_, _ = w.Write([]byte(xml.Header))
		_ = xml.NewEncoder(w).Encode(out)
	})
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
