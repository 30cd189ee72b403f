package driver

import "testing"

func TestParseSignal(t *testing.T) {
	good := map[string]string{
		"SIGTERM": "SIGTERM", "sigterm": "SIGTERM", "TERM": "SIGTERM", "term": "SIGTERM",
		"Term": "SIGTERM", "15": "SIGTERM", " SIGHUP ": "SIGHUP", "usr1": "SIGUSR1",
		"9": "SIGKILL", "SIGINT": "SIGINT", "sigquit": "SIGQUIT",
	}
	for in, want := range good {
		got, num, err := ParseSignal(in)
		if err != nil || got != want || num == 0 {
			t.Errorf("ParseSignal(%q) = %q, %d, %v; want %q", in, got, num, err, want)
		}
	}
	for _, in := range []string{"", "SIGFOO", "foo", "0", "999", "-1", "SIG"} {
		if got, _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %q, want an error", in, got)
		}
	}
}
