package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "ENVDR_"

// Every config field has an environment override, named ENVDR_ + its YAML path in capitals with
// "_" for "." and for list indexes: ENVDR_WORKER_MAX_AGE, ENVDR_POLICY_VERIFY,
// ENVDR_REGIONS_1_KMS_RATE, ENVDR_REGIONS_0_ENDPOINTS_KMS. The names come from the env tags on
// the Config structs, read by github.com/caarlos0/env; lists are comma-separated. local (the
// stand-in's section) has none: credentials never come from an override.
//
// legacyEnv keeps the names of envdr before every field had one working; the new name wins when
// both are set.
var legacyEnv = map[string]string{
	"ENVDR_VERIFY":      "ENVDR_POLICY_VERIFY",
	"ENVDR_REQUIRED":    "ENVDR_POLICY_REQUIRED",
	"ENVDR_CONCURRENCY": "ENVDR_WORKER_CONCURRENCY",
}

// what each kind of value must look like, for errors that name no Go type.
var envParsers = map[reflect.Type]env.ParserFunc{
	reflect.TypeOf(0): func(v string) (any, error) {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return nil, errors.New("want a whole number, e.g. 16")
		}
		return n, nil
	},
	reflect.TypeOf(0.0): func(v string) (any, error) {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, errors.New("want a number, e.g. 1000 or 2.5")
		}
		return f, nil
	},
	reflect.TypeOf(time.Duration(0)): func(v string) (any, error) {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, errors.New("want a number with a unit, e.g. 30s, 2m or 1h30m")
		}
		return d, nil
	},
	reflect.TypeOf(""): func(v string) (any, error) { return strings.TrimSpace(v), nil },
}

// EnvNames lists every config override, sorted, with list indexes shown as N
// (ENVDR_REGIONS_N_KMS_RATE).
func EnvNames() []string {
	var out []string
	// GetFieldParams does not descend into lists: a region's fields are listed on their own.
	for _, v := range []struct {
		v      any
		prefix string
	}{{&Config{}, EnvPrefix}, {&Region{}, EnvPrefix + "REGIONS_N_"}} {
		params, err := env.GetFieldParamsWithOptions(v.v, env.Options{Prefix: v.prefix})
		if err != nil {
			panic(err) // the tags are constant
		}
		for _, p := range params {
			if p.OwnKey != "" && !p.Ignored {
				out = append(out, p.Key)
			}
		}
	}
	sort.Strings(out)
	return out
}

// applyEnv applies the ENVDR_* overrides found through lookup, one variable at a time (sorted),
// so that an error names the variable: `ENVDR_WORKER_GRACE="30": want a number with a unit`.
// A list index beyond the config's regions is an error, not a new region.
func (c *Config) applyEnv(environ []string) error {
	vars := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, EnvPrefix) {
			vars[k] = v
		}
	}
	setAs := map[string]string{} // the name the user set, for errors
	for old, name := range legacyEnv {
		if v, ok := vars[old]; ok {
			if _, set := vars[name]; !set {
				vars[name], setAs[name] = v, old
			}
			delete(vars, old)
		}
	}
	keys := slices.Sorted(maps.Keys(vars))
	var errs []error
	for _, k := range keys {
		if i, ok := regionIndex(k); ok && i >= len(c.Regions) {
			errs = append(errs, fmt.Errorf("%s: regions[%d] does not exist (the config lists %d regions); add the region to the file", k, i, len(c.Regions)))
			continue
		}
		err := env.ParseWithOptions(c, env.Options{Prefix: EnvPrefix, Environment: map[string]string{k: vars[k]}, FuncMap: envParsers})
		name := k
		if old, ok := setAs[k]; ok {
			name = old
		}
		var pe env.ParseError
		switch {
		case errors.As(err, &pe):
			errs = append(errs, fmt.Errorf("%s=%q: %v", name, vars[k], pe.Err))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s=%q: %v", name, vars[k], err))
		}
	}
	for _, l := range [][]string{c.Policy.Required, c.TrustedKeys} {
		for i := range l {
			l[i] = strings.TrimSpace(l[i])
		}
	}
	for i := range c.Regions {
		for j := range c.Regions[i].PreviousKeys {
			c.Regions[i].PreviousKeys[j] = strings.TrimSpace(c.Regions[i].PreviousKeys[j])
		}
	}
	return errors.Join(errs...)
}

// regionIndex reads N from ENVDR_REGIONS_N_...
func regionIndex(k string) (int, bool) {
	rest, ok := strings.CutPrefix(k, EnvPrefix+"REGIONS_")
	if !ok {
		return 0, false
	}
	n, _, ok := strings.Cut(rest, "_")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil
}
