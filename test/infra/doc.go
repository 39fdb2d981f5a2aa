// Package infra is `make validate`: offline checks of terraform/, deploy/ and the policies they
// carry. It is a module of its own (go.mod here, envdr replaced by ../..) so the Kubernetes API
// types and the ECS SDK it decodes the manifests with stay out of envdr's go.mod. Its tests build
// only with -tags infra (scripts/validate.sh runs them) because they plan every Terraform root
// with the real AWS provider, which takes a minute or two.
package infra
