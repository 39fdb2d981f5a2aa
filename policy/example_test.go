package policy_test

import (
	"fmt"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/policy"
)

// Render turns an envdr config into key policies and IAM policies; Lint checks them (and any
// other policy) for the setups that defeat envelope encryption.
func ExampleRender() {
	cfg, err := config.Load("testdata/envdr.yaml")
	if err != nil {
		panic(err)
	}
	docs, err := policy.Render(cfg, policy.Options{})
	if err != nil {
		panic(err)
	}
	for _, d := range docs {
		fmt.Println(d.Name, len(d.Doc.Statement), "statements")
	}
	fmt.Println("findings:", len(policy.Lint(docs)))
	// Output:
	// iam-daemon.json 10 statements
	// iam-drill.json 8 statements
	// iam-failover.json 3 statements
	// iam-gameday.json 8 statements
	// iam-operator.json 8 statements
	// iam-producer.json 4 statements
	// iam-rewrap.json 7 statements
	// kms-key-policy.ap-southeast-2.json 14 statements
	// kms-key-policy.eu-west-1.json 14 statements
	// kms-key-policy.us-east-1.json 14 statements
	// findings: 0
}

func ExampleLint() {
	doc, err := policy.Parse([]byte(`{
	  "Version": "2012-10-17",
	  "Statement": [{"Sid": "Unwrap", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]
	}`))
	if err != nil {
		panic(err)
	}
	for _, f := range policy.Lint([]policy.Named{{Name: "app.json", Doc: doc}}) {
		fmt.Println(f.Severity, f.Rule, f.Statement)
	}
	// Output:
	// error wildcard-resource Unwrap
	// error no-context-condition Unwrap
}
