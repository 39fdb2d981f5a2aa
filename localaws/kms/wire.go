package kms

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// apiError is an AWS JSON 1.1 error: the SDK picks the typed error from __type.
type apiError struct {
	status int
	code   string
	msg    string
}

func clientErr(code, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: msg}
}

// Error constructors named after the KMS API reference "Errors" sections.
func errNotFound(msg string) *apiError     { return clientErr("NotFoundException", msg) }
func errDisabled(msg string) *apiError     { return clientErr("DisabledException", msg) }
func errInvalidState(msg string) *apiError { return clientErr("KMSInvalidStateException", msg) }
func errValidation(msg string) *apiError   { return clientErr("ValidationException", msg) }
func errUnsupported(msg string) *apiError  { return clientErr("UnsupportedOperationException", msg) }
func errInvalidCiphertext() *apiError {
	// AWS gives no detail here; neither do we, so callers cannot build oracles on it.
	return clientErr("InvalidCiphertextException", "")
}
func errInternal(msg string) *apiError {
	return &apiError{status: http.StatusInternalServerError, code: "KMSInternalException", msg: msg}
}

// epochTime is a timestamp in the AWS JSON protocol form: fractional epoch seconds.
type epochTime time.Time

func (t epochTime) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	return strconv.AppendFloat(nil, float64(ms)/1000, 'f', -1, 64), nil
}

func ept(t time.Time) *epochTime {
	if t.IsZero() {
		return nil
	}
	e := epochTime(t)
	return &e
}

type tag struct {
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`
}

type multiRegionKey struct {
	Arn    string `json:"Arn"`
	Region string `json:"Region"`
}

type multiRegionConfiguration struct {
	MultiRegionKeyType string           `json:"MultiRegionKeyType"`
	PrimaryKey         *multiRegionKey  `json:"PrimaryKey,omitempty"`
	ReplicaKeys        []multiRegionKey `json:"ReplicaKeys"`
}

type keyMetadata struct {
	AWSAccountId                string                    `json:"AWSAccountId"`
	KeyId                       string                    `json:"KeyId"`
	Arn                         string                    `json:"Arn"`
	CreationDate                *epochTime                `json:"CreationDate,omitempty"`
	Enabled                     bool                      `json:"Enabled"`
	Description                 string                    `json:"Description"`
	KeyUsage                    string                    `json:"KeyUsage"`
	KeyState                    string                    `json:"KeyState"`
	DeletionDate                *epochTime                `json:"DeletionDate,omitempty"`
	Origin                      string                    `json:"Origin"`
	KeyManager                  string                    `json:"KeyManager"`
	CustomerMasterKeySpec       string                    `json:"CustomerMasterKeySpec"`
	KeySpec                     string                    `json:"KeySpec"`
	EncryptionAlgorithms        []string                  `json:"EncryptionAlgorithms"`
	MultiRegion                 bool                      `json:"MultiRegion"`
	MultiRegionConfiguration    *multiRegionConfiguration `json:"MultiRegionConfiguration,omitempty"`
	PendingDeletionWindowInDays *int32                    `json:"PendingDeletionWindowInDays,omitempty"`
	CurrentKeyMaterialId        string                    `json:"CurrentKeyMaterialId,omitempty"`
}

// Requests. Unknown members are ignored, as AWS does for optional ones we do not model.

type createKeyRequest struct {
	Description           *string `json:"Description"`
	KeyUsage              string  `json:"KeyUsage"`
	KeySpec               string  `json:"KeySpec"`
	CustomerMasterKeySpec string  `json:"CustomerMasterKeySpec"`
	Origin                string  `json:"Origin"`
	CustomKeyStoreId      *string `json:"CustomKeyStoreId"`
	MultiRegion           *bool   `json:"MultiRegion"`
	Policy                *string `json:"Policy"`
	Tags                  []tag   `json:"Tags"`
}

type keyIDRequest struct {
	KeyId *string `json:"KeyId"`
}

type replicateKeyRequest struct {
	KeyId         *string `json:"KeyId"`
	ReplicaRegion *string `json:"ReplicaRegion"`
	Description   *string `json:"Description"`
	Policy        *string `json:"Policy"`
	Tags          []tag   `json:"Tags"`
}

type updatePrimaryRegionRequest struct {
	KeyId         *string `json:"KeyId"`
	PrimaryRegion *string `json:"PrimaryRegion"`
}

type listRequest struct {
	KeyId  *string `json:"KeyId"`
	Limit  *int32  `json:"Limit"`
	Marker *string `json:"Marker"`
}

type aliasRequest struct {
	AliasName   *string `json:"AliasName"`
	TargetKeyId *string `json:"TargetKeyId"`
}

type generateDataKeyRequest struct {
	KeyId             *string           `json:"KeyId"`
	KeySpec           string            `json:"KeySpec"`
	NumberOfBytes     *int32            `json:"NumberOfBytes"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	DryRun            *bool             `json:"DryRun"`
	Recipient         json.RawMessage   `json:"Recipient"`
}

type encryptRequest struct {
	KeyId               *string           `json:"KeyId"`
	Plaintext           []byte            `json:"Plaintext"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	DryRun              *bool             `json:"DryRun"`
}

type decryptRequest struct {
	KeyId               *string           `json:"KeyId"`
	CiphertextBlob      []byte            `json:"CiphertextBlob"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	DryRun              *bool             `json:"DryRun"`
	Recipient           json.RawMessage   `json:"Recipient"`
}

type reEncryptRequest struct {
	CiphertextBlob                 []byte            `json:"CiphertextBlob"`
	SourceKeyId                    *string           `json:"SourceKeyId"`
	SourceEncryptionContext        map[string]string `json:"SourceEncryptionContext"`
	SourceEncryptionAlgorithm      string            `json:"SourceEncryptionAlgorithm"`
	DestinationKeyId               *string           `json:"DestinationKeyId"`
	DestinationEncryptionContext   map[string]string `json:"DestinationEncryptionContext"`
	DestinationEncryptionAlgorithm string            `json:"DestinationEncryptionAlgorithm"`
	DryRun                         *bool             `json:"DryRun"`
}

type scheduleKeyDeletionRequest struct {
	KeyId               *string `json:"KeyId"`
	PendingWindowInDays *int32  `json:"PendingWindowInDays"`
}

type enableKeyRotationRequest struct {
	KeyId                *string `json:"KeyId"`
	RotationPeriodInDays *int32  `json:"RotationPeriodInDays"`
}

type keyPolicyRequest struct {
	KeyId      *string `json:"KeyId"`
	PolicyName *string `json:"PolicyName"`
	Policy     *string `json:"Policy"`
}

type generateRandomRequest struct {
	NumberOfBytes *int32 `json:"NumberOfBytes"`
}

type tagResourceRequest struct {
	KeyId   *string  `json:"KeyId"`
	Tags    []tag    `json:"Tags"`
	TagKeys []string `json:"TagKeys"`
}

type updateKeyDescriptionRequest struct {
	KeyId       *string `json:"KeyId"`
	Description *string `json:"Description"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
