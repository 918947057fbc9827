package image

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// dockerfile is what the test takes from the Dockerfile: the go build
// command of the builder stage and the final stage's image settings.
type dockerfile struct {
	buildEnv   []string // K=V before go in the RUN line
	buildArgs  []string // after go: build ..., -o replaced by the caller
	binary     string   // the -o path in the builder
	binaryDest string   // where COPY --from puts it in the image
	labels     map[string]string
	env        []string
	user       string
	ports      []string
	entrypoint []string
	cmd        []string
	workdir    string
	base       string // the final stage's FROM image
}

// parseDockerfile reads the instructions this test relies on, with build
// arguments expanded from args (then from the ARG defaults).
func parseDockerfile(path string, args map[string]string) (*dockerfile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d := &dockerfile{labels: map[string]string{}}
	var vars map[string]string // the stage's ARG and ENV values
	for _, line := range logicalLines(string(data)) {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			vars = map[string]string{}
			*d = dockerfile{buildEnv: d.buildEnv, buildArgs: d.buildArgs, binary: d.binary, labels: map[string]string{}}
			for _, w := range strings.Fields(rest) {
				if !strings.HasPrefix(w, "--") {
					d.base = w
					break
				}
			}
		case "ARG":
			name, def, _ := strings.Cut(rest, "=")
			if v, ok := args[name]; ok {
				def = v
			}
			vars[name] = def
		case "RUN":
			w, err := words(rest, vars)
			if err != nil {
				return nil, fmt.Errorf("RUN %s: %w", rest, err)
			}
			i := 0
			for i < len(w) && strings.Contains(w[i], "=") && !strings.HasPrefix(w[i], "-") {
				i++
			}
			if len(w) < i+2 || w[i] != "go" || w[i+1] != "build" {
				continue
			}
			if d.buildArgs != nil {
				return nil, fmt.Errorf("two go build lines")
			}
			d.buildEnv = w[:i]
			for j := i + 1; j < len(w); j++ {
				if w[j] == "-o" && j+1 < len(w) {
					d.binary = w[j+1]
					j++
					continue
				}
				d.buildArgs = append(d.buildArgs, w[j])
			}
		case "COPY":
			w, err := words(rest, vars)
			if err != nil {
				return nil, err
			}
			if len(w) == 3 && strings.HasPrefix(w[0], "--from=") && w[1] == d.binary {
				d.binaryDest = w[2]
			}
		case "LABEL", "ENV":
			w, err := words(rest, vars)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", instr, rest, err)
			}
			for _, kv := range w {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("%s %q: not KEY=VALUE", instr, kv)
				}
				if instr == "LABEL" {
					d.labels[k] = v
				} else {
					vars[k] = v
					d.env = append(d.env, kv)
				}
			}
		case "USER":
			d.user = rest
		case "WORKDIR":
			d.workdir = rest
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				d.ports = append(d.ports, p)
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				return nil, fmt.Errorf("ENTRYPOINT is not a JSON array (exec form): %w", err)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(rest), &d.cmd); err != nil {
				return nil, fmt.Errorf("CMD is not a JSON array (exec form): %w", err)
			}
		}
	}
	if d.buildArgs == nil || d.binaryDest == "" {
		return nil, fmt.Errorf("no go build -o X line copied into the final stage")
	}
	return d, nil
}

// logicalLines joins continued lines and drops comments and blank lines.
func logicalLines(s string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(s, "\n") {
		t := strings.TrimSpace(l)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

// words splits s as a shell does the simple lines of a Dockerfile: on
// blanks, with "double" and 'single' quotes, and ${VAR} or $VAR expanded
// from vars outside single quotes. Unknown variables are an error.
func words(s string, vars map[string]string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t'):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
			continue
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote != 0 && c == quote:
			quote = 0
		case c == '$' && quote != '\'':
			name, n := varName(s[i+1:])
			if name == "" {
				return nil, fmt.Errorf("a $ that is not a variable at %d", i)
			}
			v, ok := vars[name]
			if !ok {
				return nil, fmt.Errorf("unknown variable %s", name)
			}
			cur.WriteString(v)
			i += n
		case c == '\\' && quote != '\'' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		default:
			cur.WriteByte(c)
		}
		inWord = true
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed %c", quote)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// varName reads NAME or {NAME} at the start of s and returns the name and
// how many bytes it took.
func varName(s string) (string, int) {
	if strings.HasPrefix(s, "{") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0
		}
		return s[1:end], end + 1
	}
	n := 0
	for n < len(s) && (s[n] == '_' || s[n] >= 'A' && s[n] <= 'Z' || s[n] >= 'a' && s[n] <= 'z' || n > 0 && s[n] >= '0' && s[n] <= '9') {
		n++
	}
	return s[:n], n
}

func TestWords(t *testing.T) {
	vars := map[string]string{"V": "v1.2", "R": "abc"}
	for in, want := range map[string][]string{
		`CGO_ENABLED=0 go build -ldflags "-s -X main.version=${V} -X main.commit=$R" ./cmd/keyward`: {"CGO_ENABLED=0", "go", "build", "-ldflags", "-s -X main.version=v1.2 -X main.commit=abc", "./cmd/keyward"},
		`a="x y" b='${V}' c=\"`: {"a=x y", "b=${V}", `c="`},
		``:                      nil,
	} {
		got, err := words(in, vars)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("words(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`"open`, `${NOPE}`, `$ x`} {
		if _, err := words(bad, vars); err == nil {
			t.Errorf("words(%q): no error", bad)
		}
	}
}
