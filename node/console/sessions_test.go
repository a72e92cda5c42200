package console_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord/etcdtest"
)

type sessionsSection struct {
	Models []struct {
		Model  string     `json:"model"`
		Count  int        `json:"count"`
		Oldest *time.Time `json:"oldest"`
		Newest *time.Time `json:"newest"`
	} `json:"models"`
	More  bool   `json:"more"`
	Error string `json:"error"`
}

// createSession creates a KATO 3 session on model through a node's API and
// returns its id and created_at.
func createSession(t *testing.T, base, model string) (string, time.Time) {
	t.Helper()
	code, body := post(t, base, "/sessions", "application/json", `{"node_id":"`+model+`","ttl_seconds":600}`)
	var s struct {
		ID        string    `json:"session_id"`
		CreatedAt time.Time `json:"created_at"`
	}
	if code != 200 && code != 201 || json.Unmarshal([]byte(body), &s) != nil || s.ID == "" {
		t.Fatalf("create a session on %s: %d %s", model, code, body)
	}
	return s.ID, s.CreatedAt
}

// The Sessions section counts each model's sessions, with the creation times
// of the oldest and newest, and follows creations and deletions.
func TestSessionsSection(t *testing.T) {
	etc := etcdtest.New(t)
	a, _ := runNode(t, etc, "a", "m")
	b, _ := runNode(t, etc, "b", "n")
	s, _ := openStream(t, a.APIURL(), token)
	waitFor(s, "sessions", 20*time.Second, func(v sessionsSection) bool { return len(v.Models) == 0 && v.Error == "" })
	// Sessions are created by the model's holder: wait until both hold theirs.
	waitFor(s, "instances", 20*time.Second, func(rows []instanceRow) bool {
		ra, okA := row(rows, "a")
		rb, okB := row(rows, "b")
		return okA && okB && ra.Status == "running" && rb.Status == "running"
	})

	first, firstAt := createSession(t, a.APIURL(), "m")
	_, secondAt := createSession(t, a.APIURL(), "m")
	_, otherAt := createSession(t, b.APIURL(), "n")
	want := func(v sessionsSection, m, n int) bool {
		if v.More || v.Error != "" || len(v.Models) != 2 || v.Models[0].Model != "m" || v.Models[1].Model != "n" ||
			v.Models[0].Count != m || v.Models[1].Count != n {
			return false
		}
		for _, r := range v.Models {
			if r.Oldest == nil || r.Newest == nil {
				return false
			}
		}
		return true
	}
	v := waitFor(s, "sessions", 20*time.Second, func(v sessionsSection) bool { return want(v, 2, 1) })
	if m := v.Models[0]; !m.Oldest.Equal(firstAt) || !m.Newest.Equal(secondAt) {
		t.Errorf("model m: oldest %v newest %v, want %v and %v", m.Oldest, m.Newest, firstAt, secondAt)
	}
	if n := v.Models[1]; !n.Oldest.Equal(otherAt) || !n.Newest.Equal(otherAt) {
		t.Errorf("model n: oldest %v newest %v, want %v", n.Oldest, n.Newest, otherAt)
	}

	req, _ := http.NewRequest("DELETE", a.APIURL()+"/sessions/"+first, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("delete session %s: %d", first, resp.StatusCode)
	}
	v = waitFor(s, "sessions", 20*time.Second, func(v sessionsSection) bool { return want(v, 1, 1) })
	if m := v.Models[0]; !m.Oldest.Equal(secondAt) || !m.Newest.Equal(secondAt) {
		t.Errorf("model m after a delete: oldest %v newest %v, want %v", m.Oldest, m.Newest, secondAt)
	}
}
