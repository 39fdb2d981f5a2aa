package regions

import (
	"fmt"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// SDKLogger routes the AWS SDK's log lines (aws.Config.Logger) into zap, so they come out as JSON
// among envdr's own logs, with source=aws-sdk, instead of as plain text on stderr. The SDK's
// warnings are zap warnings, its debug lines (retries, with --log-level debug) zap debug lines.
type SDKLogger struct{ L *zap.Logger }

var _ logging.Logger = SDKLogger{}

// NewSDKLogger returns the adapter over l.
func NewSDKLogger(l *zap.Logger) SDKLogger {
	return SDKLogger{L: l.With(zap.String("source", "aws-sdk"))}
}

// Logf implements logging.Logger.
func (s SDKLogger) Logf(c logging.Classification, format string, v ...any) {
	lvl := zapcore.DebugLevel
	if c == logging.Warn {
		lvl = zapcore.WarnLevel
	}
	if ce := s.L.Check(lvl, fmt.Sprintf(format, v...)); ce != nil {
		ce.Write()
	}
}

// logMode is what the SDK logs through an SDKLogger: retries (each names the error and the
// attempt) at debug level. Requests and responses are never logged: they carry signatures,
// ciphertexts and, for Decrypt and GenerateDataKey responses, plaintext data keys.
func (s SDKLogger) logMode() aws.ClientLogMode {
	if s.L.Core().Enabled(zapcore.DebugLevel) {
		return aws.LogRetries | aws.LogDeprecatedUsage
	}
	return 0
}

// defaultSDKLogger is used when Options.SDKLogger is nil; nil keeps the SDK's own logger.
var defaultSDKLogger atomic.Pointer[SDKLogger]

// SetDefaultSDKLogger sets the SDK logger of every topology built without one (cmd/envdr sets it
// from --log-level before each command).
func SetDefaultSDKLogger(l *zap.Logger) {
	sl := NewSDKLogger(l)
	defaultSDKLogger.Store(&sl)
}
