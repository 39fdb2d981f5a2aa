package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// table is the one table printer of every command: text/tabwriter columns, two spaces apart,
// left-aligned, a header row in capitals.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(headers) > 0 {
		t.row(toAny(headers)...)
	}
	return t
}

// row writes one row; each cell is printed with %v (floats as given by the caller).
func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = strings.ReplaceAll(fmt.Sprint(c), "\t", " ")
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

// flush writes the table out; nothing is printed before it.
func (t *table) flush() error { return t.tw.Flush() }

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
