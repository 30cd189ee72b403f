package driver

import (
	"archive/zip"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

const manifestPath = "META-INF/MANIFEST.MF"

// ValidateJar checks that hostPath is a readable JAR and, when needMain,
// that its manifest names a Main-Class. shown is the path as the job wrote
// it (e.g. "local/app.jar"), which is what the messages quote.
func ValidateJar(hostPath, shown string, needMain bool) error {
	info, err := os.Stat(hostPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("jar not found at %s: was the artifact downloaded?", shown)
	case err != nil:
		return fmt.Errorf("cannot read jar %s: %w", shown, err)
	case info.IsDir():
		return fmt.Errorf("%s is a directory, not a JAR: point jar_path at the .jar file", shown)
	case info.Size() == 0:
		return fmt.Errorf("%s is not a valid JAR: the file is empty (was the download truncated?)", shown)
	}
	zr, err := zip.OpenReader(hostPath)
	if err != nil {
		return fmt.Errorf("%s is not a valid JAR: %w", shown, err)
	}
	defer zr.Close()
	if !needMain {
		return nil
	}
	mainClass, err := mainClassOf(&zr.Reader)
	if err != nil {
		return fmt.Errorf("%s is not a valid JAR: %w", shown, err)
	}
	if mainClass == "" {
		return fmt.Errorf("%s has no Main-Class in %s: rebuild it with a Main-Class, or set class and class_path in the task config", shown, manifestPath)
	}
	return nil
}

// mainClassOf returns the manifest's Main-Class, "" when there is none.
func mainClassOf(zr *zip.Reader) (string, error) {
	for _, f := range zr.File {
		if !strings.EqualFold(f.Name, manifestPath) {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return "", fmt.Errorf("open %s: %w", manifestPath, err)
		}
		defer rc.Close()
		data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", manifestPath, err)
		}
		return manifestAttr(string(data), "Main-Class"), nil
	}
	return "", nil
}

// manifestAttr reads one main-section attribute, joining continuation lines
// (a line starting with a space continues the previous one).
func manifestAttr(manifest, name string) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(manifest))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break // end of the main section
		}
		if strings.HasPrefix(line, " ") && len(lines) > 0 {
			lines[len(lines)-1] += line[1:]
			continue
		}
		lines = append(lines, line)
	}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
