package crun

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
)

// logEntry is one line of crun's `--log-format=json` output.
type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
}

// ErrorMessages returns the error-level messages crun wrote to its JSON log,
// oldest first. Lines that are not JSON are kept verbatim: crun writes a few
// messages before it has parsed --log-format.
func ErrorMessages(data []byte) []string {
	var msgs []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var e logEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			msgs = append(msgs, line)
			continue
		}
		if e.Level == "error" || e.Level == "fatal" {
			msgs = append(msgs, e.Msg)
		}
	}
	return msgs
}

// ReadErrorMessages is ErrorMessages over a log file; a missing file has none.
func ReadErrorMessages(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return ErrorMessages(data)
}
