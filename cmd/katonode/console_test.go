package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// hostileName is an instance name that would run if the console put it in
// the page as HTML.
const hostileName = `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">`

// chromium finds Debian's chromium (or another Chrome) for the browser test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("the console's browser test needs a headless Chromium: apt-get install chromium (.ci/run installs it)")
	return ""
}

// screenshotDir is where the test saves its screenshots: $KATO_CONSOLE_SCREENSHOTS
// (deployments/screenshots refreshes the README's), else a temporary directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("KATO_CONSOLE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// The console in a real browser against a real 3-node cluster (on a 3-member
// etcd): it asks for the token and says clearly when one is wrong, lists the
// three nodes with a hostile name as text, greys the row of a node killed with
// kill -9 within TTL + 1 s without a reload, and breaking a lock from the page
// turns the standby's row running. Actions send and remove messages too.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	shots := screenshotDir(t)
	const ttl = 3 * time.Second
	const token = "console-test-token"

	etc := etcdtest.NewCluster(t, 3)
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := &cluster{t: t, etc: etc, cli: cli, ctx: ctx}
	common := []string{"--port", "0", "--ttl", ttl.String(), "--api-token", token}
	c.node(append([]string{"--id", "a", "--name", "trainer A", "--model", "shared"}, common...)...)
	ra := c.waitStatus("a", coord.StatusRunning)
	c.node(append([]string{"--id", "b", "--name", "standby B", "--model", "shared"}, common...)...)
	c.waitStatus("b", coord.StatusStandby)
	victim := c.node(append([]string{"--id", "c", "--name", hostileName, "--model", "other"}, common...)...)
	c.waitStatus("c", coord.StatusRunning)
	post := func(path, body string) {
		t.Helper()
		req, err := http.NewRequest("POST", ra.APIURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}
	for i := 0; i < 3; i++ {
		post("/shared/observe", obs(fmt.Sprintf("s%d", i)))
		post("/shared/observe", obs("t"))
		post("/shared/learn", "")
	}

	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1500, 1100), chromedp.UserDataDir(t.TempDir()))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(bctx, chromedp.Navigate(ra.APIURL+"/ui/")); err != nil {
		t.Fatalf("open the console: %v", err)
	}
	pageText := func() string {
		tctx, tcancel := context.WithTimeout(bctx, 5*time.Second)
		defer tcancel()
		s, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.innerText`))
		return s
	}
	// wait polls a JavaScript condition in the page until it holds or d passes.
	wait := func(what, cond string, d time.Duration) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(bctx, d+5*time.Second)
		defer wcancel()
		if _, err := chromedp.Run(wctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
			t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, pageText())
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		dctx, dcancel := context.WithTimeout(bctx, 30*time.Second)
		defer dcancel()
		if err := chromedp.Do(dctx, steps...); err != nil {
			t.Fatalf("%s: %v\npage:\n%s", what, err, pageText())
		}
	}
	// openConfirm runs open, which opens the confirmation dialog, and waits
	// for the dialog; it tries again (five tries in all) while the dialog
	// does not open, as when the live table moved the row open acted on.
	openConfirm := func(what string, open func(context.Context) error) {
		t.Helper()
		for try := 0; ; try++ {
			cctx, ccancel := context.WithTimeout(bctx, 10*time.Second)
			err := open(cctx)
			if err == nil {
				_, err = chromedp.Run(cctx, chromedp.Poll[bool](`document.getElementById('confirm').open`, chromedp.WithPollingTimeout(2*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)))
			}
			ccancel()
			if err == nil {
				return
			}
			if try == 4 {
				t.Fatalf("%s: %v\npage:\n%s", what, err, pageText())
			}
		}
	}
	// click clicks sel and waits for the confirmation dialog it opens. The
	// live tables move rows as they change, and a mouse click at the place
	// CDP measured can miss a row that moved meanwhile: the button's own
	// click() cannot, and it is tried again until the dialog opens.
	click := func(what, sel string) {
		t.Helper()
		openConfirm(what, func(ctx context.Context) error {
			_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const b = document.querySelector('`+sel+`'); if (b) b.click(); return !!b; })()`))
			return err
		})
	}
	eval := func(js string) string {
		t.Helper()
		ectx, ecancel := context.WithTimeout(bctx, 10*time.Second)
		defer ecancel()
		s, err := chromedp.Run(ectx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		sctx, scancel := context.WithTimeout(bctx, 30*time.Second)
		defer scancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const tokenMsg = `document.getElementById('token-msg').textContent`
	const submitToken = `document.getElementById('token-form').requestSubmit()`

	// No token yet: the page asks for it. A wrong one: a clear message.
	wait("the token form", `!document.getElementById('token').hidden && `+tokenMsg+`.includes('asks for its API token')`, 30*time.Second)
	do("enter a wrong token", chromedp.SendKeys(chromedp.CSS("#token-input"), "not-the-token"), chromedp.Evaluate[chromedp.Void](submitToken))
	wait("the wrong-token message", tokenMsg+`.includes('not accepted by this node (401')`, 30*time.Second)
	shot("console-wrong-token.png")
	do("enter the token", chromedp.SendKeys(chromedp.CSS("#token-input"), token), chromedp.Evaluate[chromedp.Void](submitToken))

	// All three listed, the hostile name as text.
	row := func(table, key string) string {
		return fmt.Sprintf(`document.querySelector('#%s tr[data-key="%s"]')`, table, key)
	}
	wait("three rows", `['a','b','c'].every(id => document.querySelector('#instances tr[data-key="' + id + '"]'))`, 30*time.Second)
	wait("the statuses", row("instances", "a")+`.cells[4].textContent === 'running' && `+row("instances", "b")+`.cells[4].textContent === 'standby' && `+row("instances", "c")+`.cells[4].textContent === 'running'`, 30*time.Second)
	if got := eval(row("instances", "c") + `.cells[2].textContent`); got != hostileName {
		t.Fatalf("the hostile name shows as %q, want the text %q", got, hostileName)
	}
	if got := eval(`String(window.__pwned) + ' ' + document.querySelectorAll('main script, main img').length`); got != "undefined 0" {
		t.Fatalf("the hostile name was run or parsed as HTML: __pwned, elements = %s", got)
	}
	wait("lock, queue and etcd panels", row("models", "shared")+`.cells[6].textContent === 'b' && `+
		row("models", "shared")+`.cells[1].textContent === '3' && document.querySelectorAll('#members tr').length === 3 && document.getElementById('etcd-summary').textContent.includes('leader: ')`, 30*time.Second)

	wait("the learns sparkline of a's model", row("models", "shared")+`.querySelector('svg.spark') && `+
		row("models", "shared")+`.querySelector('svg.spark').getAttribute('aria-label').endsWith(', 3 in all')`, 30*time.Second)

	// Send a message from the page to an id nobody has: its inbox shows.
	do("send a message", chromedp.SetValue(chromedp.CSS(`#send-form input[name="to"]`), "old-worker"),
		chromedp.SetValue(chromedp.CSS(`#send-form textarea`), "<b>batch 7</b>"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('send-form').requestSubmit()`))
	wait("the confirmation", `document.getElementById('confirm').open`, 10*time.Second)
	do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	wait("the sent notice", `document.getElementById('notice').textContent.includes('sent message')`, 30*time.Second)
	wait("the inbox row", row("inboxes", "old-worker")+` && `+row("inboxes", "old-worker")+`.cells[2].textContent === '1'`, 30*time.Second)
	shot("console.png")

	// kill -9 c: its row turns grey within TTL + 1 s, with no reload.
	eval(`window.__noReload = 'still here'; ''`)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	wait("c's row to turn grey", row("instances", "c")+`.classList.contains('gone')`, 3*ttl)
	took := time.Since(killed)
	t.Logf("c's row turned grey %v after kill -9 (TTL %v)", took, ttl)
	if took > ttl+time.Second {
		t.Errorf("c's row changed %v after the kill, want within TTL + 1 s = %v", took, ttl+time.Second)
	}
	if got := eval(`String(window.__noReload)`); got != "still here" {
		t.Fatalf("the page was reloaded (marker %q)", got)
	}
	if got := eval(row("instances", "c") + `.querySelector('.dot').className`); got != "dot gone" {
		t.Errorf("c's live dot is %q, want grey (dot gone): %s", got, eval(row("instances", "c")+`.outerHTML`))
	}

	// Break shared's lock from the page: b's row turns running.
	click("break the lock", `#models tr[data-key="shared"] button`)
	wait("the confirmation", `document.getElementById('confirm').open && document.getElementById('confirm-text').textContent.includes('b takes the lock next')`, 10*time.Second)
	do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	broke := time.Now()
	wait("b's row to turn running", row("instances", "b")+`.cells[4].textContent === 'running'`, 30*time.Second)
	t.Logf("b's row turned running %v after the break", time.Since(broke))
	if got := eval(`document.getElementById('notice').textContent`); !strings.Contains(got, "broke the lock of model shared") {
		t.Errorf("notice after the break: %q", got)
	}
	wait("a back to standby", row("instances", "a")+`.cells[4].textContent === 'standby'`, 30*time.Second)
	shot("console-lock-broken.png")

	// Remove the inbox nobody reads, with the keyboard only: Enter on the
	// button, the dialog opens on Cancel, Tab to Confirm, Enter.
	// A row the table moves loses focus (and its node id): try again then.
	openConfirm("remove the inbox with Enter", func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(`#inboxes tr[data-key="old-worker"] button`)), chromedp.KeyEvent(kb.Enter))
	})
	wait("the confirmation, focused on Cancel", `document.getElementById('confirm').open && document.activeElement.id === 'confirm-cancel'`, 10*time.Second)
	do("tab to Confirm", chromedp.KeyEvent(kb.Tab))
	wait("Confirm focused", `document.activeElement.id === 'confirm-ok'`, 10*time.Second)
	do("confirm", chromedp.KeyEvent(kb.Enter))
	wait("the inbox to go", `!`+row("inboxes", "old-worker")+` && document.getElementById('notice').textContent.includes('removed 1 messages waiting for old-worker')`, 30*time.Second)

	// 200% zoom: half the width at twice the scale; the page reflows.
	do("zoom", chromedp.EmulateViewport(750, 1100, chromedp.EmulateScale(2)))
	wait("reflow", `document.documentElement.scrollWidth <= window.innerWidth + 1`, 10*time.Second)
	shot("console-zoom-200.png")
}
