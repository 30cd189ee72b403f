package driver

import (
	"archive/zip"
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func makeJar(t *testing.T, manifest string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if manifest != "" {
		w, err := zw.Create("META-INF/MANIFEST.MF")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(manifest))
	}
	w, _ := zw.Create("Hello.class")
	_, _ = w.Write([]byte{0xca, 0xfe, 0xba, 0xbe})
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestValidateJar(t *testing.T) {
	good := makeJar(t, "Manifest-Version: 1.0\r\nMain-Class: Hello\r\n\r\n")
	random := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(random)
	cases := []struct {
		name     string
		content  []byte // nil = file missing
		dir      bool
		needMain bool
		wantErr  string
	}{
		{"valid", good, false, true, ""},
		{"continued main class", makeJar(t, "Manifest-Version: 1.0\nMain-Class: com.example.Very\n LongName\n\n"), false, true, ""},
		{"missing", nil, false, true, "jar not found at local/app.jar: was the artifact downloaded?"},
		{"directory", nil, true, true, "is a directory"},
		{"empty", []byte{}, false, true, "local/app.jar is not a valid JAR: the file is empty"},
		{"random bytes", random, false, true, "local/app.jar is not a valid JAR: zip: not a valid zip file"},
		{"truncated", good[:len(good)/2], false, true, "local/app.jar is not a valid JAR: zip: not a valid zip file"},
		{"no manifest", makeJar(t, ""), false, true, "has no Main-Class"},
		{"manifest without Main-Class", makeJar(t, "Manifest-Version: 1.0\n\n"), false, true, "has no Main-Class"},
		{"Main-Class outside main section", makeJar(t, "Manifest-Version: 1.0\n\nName: x\nMain-Class: Hello\n"), false, true, "has no Main-Class"},
		{"class mode needs no manifest", makeJar(t, ""), false, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.jar")
			switch {
			case c.dir:
				_ = os.Mkdir(path, 0o755)
			case c.content != nil:
				if err := os.WriteFile(path, c.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := ValidateJar(path, "local/app.jar", c.needMain)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error = %v, want %q", err, c.wantErr)
			}
		})
	}
}

func TestManifestAttr(t *testing.T) {
	m := "Manifest-Version: 1.0\r\nmain-class:  a.B\r\nCreated-By: x\r\n"
	if got := manifestAttr(m, "Main-Class"); got != "a.B" {
		t.Fatalf("got %q", got)
	}
}
