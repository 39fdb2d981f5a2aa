// Command release checks what scripts/release.sh wrote (make release-check, run by make test):
// every archive is there and verifies against SHA256SUMS, each holds envdr, LICENSE and
// README.md, each binary is an executable for its own OS and architecture (ELF, Mach-O, PE
// headers) built with CGO off and stamped with the release version (its Go build information
// records the -X main.version flag, and the version string is in its data), and each SBOM
// parses as CycloneDX and names envdr's direct dependencies that the binary links.
//
// It runs no binary: the script runs the linux/amd64 one (envdr version); the darwin and
// windows ones can only be inspected on a Linux machine.
//
//	go run ./test/release -dir DIR -version vX.Y.Z [-targets "linux/amd64 ..."]
package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	dir := flag.String("dir", "dist", "the directory scripts/release.sh wrote")
	version := flag.String("version", "", "the release version (vX.Y.Z...)")
	targets := flag.String("targets", "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64", "os/arch pairs")
	flag.Parse()
	if *version == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: release -dir DIR -version vX.Y.Z [-targets LIST]")
		os.Exit(2)
	}
	direct, err := linkedDirectDeps()
	if err == nil {
		err = check(*dir, *version, strings.Fields(*targets), direct)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release-check:", err)
		os.Exit(1)
	}
}

func check(dir, version string, targets []string, direct []string) error {
	sums, err := verifySums(dir)
	if err != nil {
		return err
	}
	v := strings.TrimPrefix(version, "v")
	var errs []error
	for _, t := range targets {
		goos, goarch, _ := strings.Cut(t, "/")
		name := fmt.Sprintf("envdr_%s_%s_%s", v, goos, goarch)
		archive := name + ".tar.gz"
		if goos == "windows" {
			archive = name + ".zip"
		}
		for _, f := range []string{archive, name + ".sbom.json"} {
			if !sums[f] {
				errs = append(errs, fmt.Errorf("%s: missing from SHA256SUMS", f))
			}
		}
		files, err := readArchive(filepath.Join(dir, archive))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", archive, err))
			continue
		}
		exe := "envdr"
		if goos == "windows" {
			exe = "envdr.exe"
		}
		var names []string
		for n := range files {
			names = append(names, n)
		}
		slices.Sort(names)
		if want := []string{"LICENSE", "README.md", exe}; !slices.Equal(names, sortedCopy(want)) {
			errs = append(errs, fmt.Errorf("%s: holds %v, want %v", archive, names, sortedCopy(want)))
			continue
		}
		before := len(errs)
		if err := checkBinary(files[exe], goos, goarch, version); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", archive, exe, err))
		}
		if err := checkSBOM(filepath.Join(dir, name+".sbom.json"), direct); err != nil {
			errs = append(errs, fmt.Errorf("%s.sbom.json: %w", name, err))
		}
		if len(errs) > before {
			continue
		}
		fmt.Printf("release-check: %s ok (%s %s/%s, %s)\n", archive, binFormat(goos), goos, goarch, version)
	}
	return errors.Join(errs...)
}

func sortedCopy(s []string) []string { c := slices.Clone(s); slices.Sort(c); return c }

// verifySums recomputes every sum in DIR/SHA256SUMS (sha256sum's format) and returns the names.
func verifySums(dir string) (map[string]bool, error) {
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			return nil, fmt.Errorf("SHA256SUMS: bad line %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("SHA256SUMS: %w", err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			return nil, fmt.Errorf("SHA256SUMS: %s: sum mismatch", name)
		}
		names[name] = true
	}
	return names, sc.Err()
}

// readArchive returns the regular files of a .tar.gz or .zip by name.
func readArchive(path string) (map[string][]byte, error) {
	out := map[string][]byte{}
	if strings.HasSuffix(path, ".zip") {
		z, err := zip.OpenReader(path)
		if err != nil {
			return nil, err
		}
		defer z.Close()
		for _, f := range z.File {
			rc, err := f.Open()
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return nil, err
			}
			out[f.Name] = b
		}
		return out, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%s: not a regular file", h.Name)
		}
		if h.Name == "envdr" && h.Mode&0o111 == 0 {
			return nil, fmt.Errorf("envdr is not executable (mode %o)", h.Mode)
		}
		if out[h.Name], err = io.ReadAll(tr); err != nil {
			return nil, err
		}
	}
}

func binFormat(goos string) string {
	switch goos {
	case "darwin":
		return "Mach-O"
	case "windows":
		return "PE"
	}
	return "ELF"
}

// lcCodeSignature is LC_CODE_SIGNATURE (mach-o/loader.h), which debug/macho does not name.
const lcCodeSignature = 0x1d

func hasLoad(f *macho.File, cmd uint32) bool {
	for _, l := range f.Loads {
		if raw := l.Raw(); len(raw) >= 4 && f.ByteOrder.Uint32(raw) == cmd {
			return true
		}
	}
	return false
}

// checkBinary checks the executable's header (format and CPU), its Go build information and
// that the version string is in it.
func checkBinary(b []byte, goos, goarch, version string) error {
	r := bytes.NewReader(b)
	var cpu string
	switch goos {
	case "darwin":
		f, err := macho.NewFile(r)
		if err != nil {
			return fmt.Errorf("not a Mach-O file: %w", err)
		}
		if f.Type != macho.TypeExec {
			return fmt.Errorf("Mach-O type %v, want an executable", f.Type)
		}
		cpu = map[macho.Cpu]string{macho.CpuArm64: "arm64", macho.CpuAmd64: "amd64"}[f.Cpu]
		// Apple silicon kills an unsigned executable at launch; Go's linker signs it ad hoc.
		if goarch == "arm64" && !hasLoad(f, lcCodeSignature) {
			return errors.New("Mach-O arm64 without a code signature (LC_CODE_SIGNATURE): macOS would kill it at launch")
		}
	case "windows":
		f, err := pe.NewFile(r)
		if err != nil {
			return fmt.Errorf("not a PE file: %w", err)
		}
		cpu = map[uint16]string{pe.IMAGE_FILE_MACHINE_AMD64: "amd64", pe.IMAGE_FILE_MACHINE_ARM64: "arm64"}[f.Machine]
	default:
		f, err := elf.NewFile(r)
		if err != nil {
			return fmt.Errorf("not an ELF file: %w", err)
		}
		if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
			return fmt.Errorf("ELF type %v, want an executable", f.Type)
		}
		cpu = map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine]
	}
	if cpu != goarch {
		return fmt.Errorf("built for CPU %q, want %s", cpu, goarch)
	}
	bi, err := buildinfo.Read(r)
	if err != nil {
		return fmt.Errorf("no Go build information: %w", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"GOOS": goos, "GOARCH": goarch, "CGO_ENABLED": "0"} {
		if settings[k] != want {
			return fmt.Errorf("build setting %s=%q, want %q", k, settings[k], want)
		}
	}
	if bi.Path != "github.com/envdr/envdr/cmd/envdr" {
		return fmt.Errorf("main package %s, want github.com/envdr/envdr/cmd/envdr", bi.Path)
	}
	// -trimpath keeps local paths out of the binary, and with them -ldflags out of its build
	// information; the -X main.version value is found in its data instead.
	if settings["-trimpath"] != "true" {
		return fmt.Errorf("not built with -trimpath: local paths are in it")
	}
	if !bytes.Contains(b, []byte(version)) {
		return fmt.Errorf("the version string %s is not in the binary (-X main.version)", version)
	}
	return nil
}

// linkedDirectDeps are the modules go.mod requires directly that cmd/envdr links (test-only and
// stand-in-only requirements are not in its SBOM).
func linkedDirectDeps() ([]string, error) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Indirect}}{{end}}{{end}}", "./cmd/envdr").Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps ./cmd/envdr: %w", err)
	}
	seen := map[string]bool{}
	var direct []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, indirect, _ := strings.Cut(line, " ")
		if path != "" && indirect == "false" && !seen[path] {
			seen[path] = true
			direct = append(direct, path)
		}
	}
	if len(direct) == 0 {
		return nil, errors.New("go list found no direct dependency of cmd/envdr")
	}
	slices.Sort(direct)
	return direct, nil
}

// checkSBOM parses a CycloneDX JSON SBOM and checks that it describes envdr and lists every
// module in direct by its Go package URL.
func checkSBOM(path string, direct []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var bom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Metadata    struct {
			Component struct {
				Name string `json:"name"`
			} `json:"component"`
		} `json:"metadata"`
		Components []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			PURL    string `json:"purl"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &bom); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion == "" {
		return fmt.Errorf("bomFormat %q specVersion %q: not a CycloneDX BOM", bom.BOMFormat, bom.SpecVersion)
	}
	if !strings.HasSuffix(bom.Metadata.Component.Name, "envdr") {
		return fmt.Errorf("describes %q, want envdr", bom.Metadata.Component.Name)
	}
	have := map[string]bool{}
	for _, c := range bom.Components {
		have[c.Name] = true
		if p, ok := strings.CutPrefix(c.PURL, "pkg:golang/"); ok {
			p, _, _ = strings.Cut(p, "@")
			have[p] = true
		}
	}
	var missing []string
	for _, d := range direct {
		if !have[d] {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("does not name the direct dependencies %v (%d components)", missing, len(bom.Components))
	}
	return nil
}
