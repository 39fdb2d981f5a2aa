//go:build !linux

package main

import (
	"errors"
	"os"
)

// pipeOut exists on Linux only (vmsplice, splice_linux.go): elsewhere stdout is written with
// write(2) like any other output, and newPipeOut says so by returning nil.
type pipeOut struct{ put int64 }

func newPipeOut(*os.File) *pipeOut { return nil }

var errNoVmsplice = errors.New("vmsplice: Linux only")

func (p *pipeOut) Write([]byte) (int, error)          { return 0, errNoVmsplice }
func (p *pipeOut) WriteHeld([]byte) (int64, error)    { return 0, errNoVmsplice }
func (p *pipeOut) Consumed(int64, bool) (bool, error) { return false, errNoVmsplice }
