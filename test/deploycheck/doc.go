// Package deploycheck renders the Helm chart with the Helm Go SDK and parses the alert and
// dashboard expressions with the Prometheus PromQL parser. It is a module of its own so that
// Helm's and Prometheus's large dependency trees stay out of envdr's go.mod; make validate runs
// it (scripts/validate.sh).
package deploycheck
