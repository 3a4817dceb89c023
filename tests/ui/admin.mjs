// The admin UI as an admin uses it, in Debian's headless chromium driven by Playwright.
// Started by tests/ui.rs with a running Strata that holds one study; every step asserts what
// the page shows, and each page is saved as a screenshot under $SCREENSHOTS.
//
// Environment: STRATA_URL, STRATA_TOKEN, STUDY_UID, NEW_FS_PATH, SCREENSHOTS,
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("STRATA_URL");
const token = env("STRATA_TOKEN");
const studyUid = env("STUDY_UID");
const newFsPath = env("NEW_FS_PATH");
const shots = env("SCREENSHOTS");

// Flags as the machine's notes give them: no sandbox as root, and no background connections
// (the network is closed, and chromium would otherwise keep trying). Playwright gives the
// browser a fresh, empty profile directory of its own.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
// Over HTTPS the certificate comes from the test's own CA, which this fresh profile does not
// trust (curl checks the chain in tests/tls.rs); what is checked here is the UI over TLS.
const https = base.startsWith("https:");
const context = await browser.newContext({
  viewport: { width: 1280, height: 800 },
  ignoreHTTPSErrors: https,
});
const page = await context.newPage();
page.setDefaultTimeout(20_000);
page.on("dialog", (dialog) => dialog.accept()); // the confirm() before destructive actions
const problems = [];
page.on("pageerror", (error) => problems.push(`script error: ${error.message}`));

const shot = async (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const notice = async (kind) => (await page.locator(`p.notice.${kind}`).textContent()).trim();
const step = (text) => console.log(`-- ${text}`);

try {
  step("a page without a session leads to the login form; a wrong token is refused");
  await page.goto(`${base}/ui/jobs`);
  assert.match(page.url(), /\/ui\/login\?next=/);
  await shot("login");
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  assert.equal(await notice("error"), "Wrong token.");

  step("the right token opens the page asked for, then the dashboard");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/ui\/jobs/);
  const session = (await context.cookies()).find((cookie) => cookie.name === "strata_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.secure, https, "the session cookie is Secure exactly when served over HTTPS");
  assert.equal(session.httpOnly, true);
  await page.click("header nav >> text=Dashboard");
  await page.waitForSelector("h1:has-text('Dashboard')");
  assert.ok(await page.locator("text=Studies by availability").isVisible());
  const onlineRow = page.locator("section.card:has-text('Studies by availability') tbody tr", { hasText: "ONLINE" });
  assert.equal(await onlineRow.count(), 1, "the dashboard counts the ONLINE study");
  await shot("dashboard");

  step("add a filesystem; a bad path gets a clear error");
  await page.click("header nav >> text=Filesystems");
  await page.fill("#add-filesystem input[name=path]", "relative/dir");
  await page.click("#add-filesystem button[type=submit]");
  assert.match(await notice("error"), /path: must be an absolute path/);
  await page.fill("#add-filesystem input[name=path]", newFsPath);
  await page.fill("#add-filesystem input[name=min_free]", "2GiB");
  await page.click("#add-filesystem button[type=submit]");
  assert.match(await notice("ok"), /added to group ONLINE_STORAGE/);
  const row = page.locator(`#filesystems tr[data-path="${newFsPath}"]`);
  assert.equal(await row.count(), 1, "the new filesystem is listed");
  assert.equal(await row.locator("input[name=min_free]").inputValue(), "2GiB");
  await row.locator("select[name=mode]").selectOption("ro");
  await row.locator("button:has-text('Save')").click();
  assert.match(await notice("ok"), /saved \(ONLINE_STORAGE, ro\)/);
  await shot("filesystems");

  step("a retention rule: an invalid schedule is refused, naming the field; the preview explains");
  await page.click("header nav >> text=Rules");
  await page.click("text=New retention rule");
  await page.fill("#retention-form input[name=name]", "idle");
  await page.fill("#retention-form input[name=schedule]", "61 * * * *");
  await page.fill("#retention-form input[name=not_accessed_days]", "30");
  await page.click("#retention-form button[type=submit]");
  assert.match(await notice("error"), /schedule/);
  await page.fill("#retention-form input[name=name]", "idle");
  await page.fill("#retention-form input[name=schedule]", "0 3 * * *");
  await page.fill("#retention-form input[name=not_accessed_days]", "30");
  await page.click("#retention-form button[type=submit]");
  await page.waitForURL(/\/ui\/rules\/retention\/idle/);
  assert.match(await notice("ok"), /Retention rule idle saved/);
  let preview = page.locator("#preview");
  assert.match(await preview.textContent(), /Would delete the ONLINE copy of 0 of 1/);
  step("edit it: 0 days idle; still held back, because no verified nearline copy exists");
  await page.fill("#retention-form input[name=not_accessed_days]", "0");
  await page.click("#retention-form button[type=submit]");
  await page.waitForURL(/\/ui\/rules\/retention\/idle/);
  preview = page.locator("#preview");
  assert.equal(await page.locator("#retention-form input[name=not_accessed_days]").inputValue(), "0");
  assert.match(await preview.textContent(), /no verified NEARLINE copy/i);
  assert.equal(await preview.locator("tr.kept").count(), 1);
  await shot("retention-rule");

  step("a copy from the study page; watch the job finish");
  await page.click("header nav >> text=Studies");
  await page.waitForSelector("#studies");
  await shot("studies");
  await page.locator("#studies tbody tr a").first().click();
  await page.waitForURL(new RegExp(`/ui/studies/${studyUid.replaceAll(".", "\\.")}`));
  assert.equal((await page.locator("#availability").textContent()).trim(), "ONLINE");
  await page.click("button:has-text('Copy to nearline')");
  assert.match(await notice("ok"), /\(COPY\) queued/);
  // The jobs section refreshes itself; no reload here.
  await page.waitForSelector("#live tr[data-state=DONE]:has-text('COPY')", { timeout: 60_000 });
  await page.waitForSelector("#copies td:has-text('TO_ARCHIVE')");
  await shot("study-copied");

  step("verify the copy, then delete the ONLINE copy: the study becomes NEARLINE");
  await page.click("button:has-text('Verify copy')");
  await page.waitForSelector("#live tr[data-state=DONE]:has-text('VERIFY')", { timeout: 60_000 });
  await page.waitForSelector("#copies td:has-text('ARCHIVED')");
  await page.click("button:has-text('Delete ONLINE copy')");
  await page.waitForSelector("#live tr[data-state=DONE]:has-text('DELETE')", { timeout: 60_000 });
  await page.waitForFunction(() => document.getElementById("availability")?.textContent.trim() === "NEARLINE");
  await page.reload();
  assert.equal((await page.locator("#availability").textContent()).trim(), "NEARLINE");
  assert.equal(await page.locator("#copies td:has-text('ONLINE')").count(), 0, "no ONLINE copy left");
  await shot("study-nearline");

  step("the jobs page lists all three, filterable");
  await page.click("header nav >> text=Jobs");
  assert.equal(await page.locator("table.jobs tbody tr[data-state=DONE]").count(), 3);
  await page.selectOption("select[name=type]", "VERIFY");
  await page.click("button:has-text('Filter')");
  assert.equal(await page.locator("table.jobs tbody tr[data-job]").count(), 1);
  await shot("jobs");

  step("nearline targets and AE titles");
  await page.click("header nav >> text=Nearline targets");
  assert.ok(await page.locator("#targets td:has-text('local')").isVisible());
  await shot("targets");
  await page.click("header nav >> text=AE titles");
  await page.fill("input[name=ae_title]", "VIEWER1");
  await page.fill("input[name=host]", "10.0.0.7");
  await page.fill("input[name=port]", "99999");
  await page.click("button:has-text('Save peer')");
  assert.match(await notice("error"), /port/);
  await page.fill("input[name=ae_title]", "VIEWER1");
  await page.fill("input[name=host]", "10.0.0.7");
  await page.fill("input[name=port]", "11113");
  await page.click("button:has-text('Save peer')");
  assert.match(await notice("ok"), /Peer VIEWER1 saved/);
  assert.ok(await page.locator("#peers td:has-text('VIEWER1')").isVisible());
  await shot("ae-titles");

  step("the audit trail lists the failed login and the peer saved");
  await page.click("header nav >> text=Audit trail");
  // Events are written in batches within about a second: filter again until they are listed.
  const listedAfterFilter = async (action, locate) => {
    for (let attempt = 0; attempt < 40; attempt++) {
      await page.selectOption("select[name=action]", action);
      await page.click("button:has-text('Filter')");
      if ((await locate().count()) >= 1) return locate();
      await page.waitForTimeout(250);
    }
    throw new Error(`no ${action} event listed in the audit trail after 10 s`);
  };
  const failedLogin = await listedAfterFilter("LOGIN", () =>
    page.locator("#audit tbody tr", { hasText: "FAILURE" }));
  assert.match(await failedLogin.first().textContent(), /127\.0\.0\.1/);
  const peerSaved = await listedAfterFilter("CONFIG", () =>
    page.locator("#audit td:has-text('/ui/ae-titles')"));
  assert.ok(await peerSaved.first().isVisible());
  await shot("audit");

  step("the dashboard shows the study NEARLINE; logging out ends the session");
  await page.click("header nav >> text=Dashboard");
  assert.equal(await page.locator("section.card:has-text('Studies by availability') tbody tr", { hasText: "NEARLINE" }).count(), 1);
  await shot("dashboard-after");
  await page.click("button:has-text('Log out')");
  await page.waitForURL(/\/ui\/login/);
  await page.goto(`${base}/ui/`);
  assert.match(page.url(), /\/ui\/login/);

  assert.deepEqual(problems, [], "no script errors on any page");
  console.log("UI end-to-end: all steps passed");
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(`UI end-to-end failed at ${page.url()}`);
  throw error;
} finally {
  await browser.close();
}
