package main

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// Log formats of --log-format.
const (
	logConsole = "console"
	logJSON    = "json"
)

var (
	globalLogFormat string // --log-format / ENVDR_LOG_FORMAT; "" picks by stderr
	// cliLog is the logger of the running command (built in the root's PersistentPreRunE):
	// seal and open log their region tries, KMS calls and fall-overs on it at debug.
	cliLog = zap.NewNop()
	// stderrIsTerminal says whether stderr is a terminal; a variable so tests can pretend.
	stderrIsTerminal = func() bool { return term.IsTerminal(int(os.Stderr.Fd())) }
)

// logFormat resolves --log-format: console for a person at a terminal, JSON for log collectors
// (anything else), unless chosen.
func logFormat(format string) (string, error) {
	switch format {
	case logConsole, logJSON:
		return format, nil
	case "":
		if stderrIsTerminal() {
			return logConsole, nil
		}
		return logJSON, nil
	}
	return "", usageError("--log-format %q: use console or json", format)
}

// newLogger returns a logger on stderr at level (debug, info, warn, error) in the --log-format.
func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, usageError("--log-level %q: use debug, info, warn or error", level)
	}
	format, err := logFormat(globalLogFormat)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if format == logConsole {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(os.Stderr), lvl)
	return zap.New(core), nil
}
