// Package infra is `make validate`: offline checks of terraform/, deploy/ and the policies they
// carry. Its tests build only with -tags infra (the make target runs them) because they plan
// every Terraform root with the real AWS provider, which takes a minute or two; a plain
// `go test ./...` compiles this empty package and moves on.
package infra
