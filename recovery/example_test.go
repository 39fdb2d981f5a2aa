package recovery_test

import (
	"fmt"

	"github.com/envdr/envdr/recovery"
)

// A drill's --report PATH names the three report files; an extension on PATH is dropped.
func ExampleReportPaths() {
	md, html, js := recovery.ReportPaths("drills/2026-11-23-eu-west-1.html")
	fmt.Println(md)
	fmt.Println(html)
	fmt.Println(js)
	// Output:
	// drills/2026-11-23-eu-west-1.md
	// drills/2026-11-23-eu-west-1.html
	// drills/2026-11-23-eu-west-1.json
}
