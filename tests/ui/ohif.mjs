// The OHIF viewer that Strata serves at /viewer/, as a user opens it, in Debian's headless
// chromium driven by Playwright: the study list must list the study, and the study must open in
// the Basic Viewer with a CT image drawn in the viewport (pixels read back from the canvas).
//
// Environment:
//   VIEWER_URL      the viewer's root, e.g. http://127.0.0.1:8080/viewer/ (trailing slash optional)
//   STUDY_UID       Study Instance UID of a CT study that must be listed and opened
//   SCREENSHOT_DIR  where study-list.png, study-selected.png, viewer.png and viewport.png go
//   PATIENT_NAME    optional; the patient name of that study (DICOM "Family^Given" or as shown,
//                   "Family, Given"). Without it the name is taken from the QIDO-RS answer.
//   DICOMWEB_ROOT   optional; default <origin of VIEWER_URL>/dicom-web. WADO-URI is <origin>/wado.
//   REQUEST_LOG     optional; a JSON file to write every DICOMweb request to (URL, Accept, status)
//   CHROMIUM        optional; default /usr/bin/chromium
//   CHROMIUM_ARG    optional; one extra chromium flag, e.g. "--host-resolver-rules=MAP strata.test
//                   127.0.0.1" to open the viewer as http://strata.test:PORT/viewer/, an insecure
//                   origin as on a LAN (no service worker API, no crypto.randomUUID)
//   TIMEOUT_MS      optional; per wait, default 30000
//   LOGIN_TOKEN     optional; log in to Strata's admin UI with this token first, so the
//                   viewer's DICOMweb requests carry the session cookie
// Fails (exit 1, with the reason) on: a page error, a failed or >= 400 request to the DICOMweb or
// WADO-URI root, any request that leaves the viewer's origin, the study missing from the list, or a
// viewport that stays blank. Console errors are printed, not fatal.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const started = Date.now();
const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`ohif: ${name} is not set`);
    process.exit(2);
  }
  return value;
};
const viewerUrl = env("VIEWER_URL").replace(/\/?$/, "/");
const studyUid = env("STUDY_UID");
const shots = env("SCREENSHOT_DIR");
const origin = new URL(viewerUrl).origin;
const dicomwebRoot = (process.env.DICOMWEB_ROOT || `${origin}/dicom-web`).replace(/\/$/, "");
const wadoUriRoot = `${origin}/wado`;
const timeout = Number(process.env.TIMEOUT_MS || 30_000);
mkdirSync(shots, { recursive: true });

// OHIF shows DICOM PN "Family^Given^Middle" as "Family, Given Middle".
const formatPN = (pn) => pn.replace("^", ", ").replace(/\^/g, " ").trim();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const step = (text) => console.log(`-- [${elapsed()}] ${text}`);

const problems = [];
const consoleErrors = [];
const external = [];
const dicomweb = []; // { method, url, accept, status, type }
const isDicomweb = (url) => url.startsWith(dicomwebRoot + "/") || url === dicomwebRoot
  || url.startsWith(wadoUriRoot + "?") || url === wadoUriRoot;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As tests/ui/admin.mjs: no sandbox as root, no background connections (the network is closed).
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ...(process.env.CHROMIUM_ARG ? [process.env.CHROMIUM_ARG] : []),
  ],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Nothing outside the viewer's origin may be fetched: Strata's viewer must work offline.
  await context.route(
    (url) => url.origin !== origin && (url.protocol === "http:" || url.protocol === "https:"),
    (route) => {
      external.push(route.request().url());
      return route.abort("blockedbyclient");
    },
  );
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("request", (request) => {
    if (!isDicomweb(request.url())) return;
    const entry = { method: request.method(), url: request.url(), accept: request.headers()["accept"] ?? null };
    dicomweb.push(entry);
    request.allHeaders().then((headers) => { entry.accept = headers["accept"] ?? entry.accept; }, () => {});
    request.response().then((response) => {
      entry.status = response ? response.status() : null;
      entry.type = response ? response.headers()["content-type"] : null;
      if (response && response.status() >= 400) {
        problems.push(`DICOMweb ${response.status()} for ${request.method()} ${request.url()}`);
      }
    }, () => {});
  });
  page.on("requestfailed", (request) => {
    if (!isDicomweb(request.url())) return;
    const reason = request.failure()?.errorText ?? "failed";
    // An abort is OHIF cancelling what it no longer needs (e.g. on leaving the study list).
    if (reason === "net::ERR_ABORTED") console.log(`   (aborted by the viewer: ${request.url()})`);
    else problems.push(`DICOMweb request failed (${reason}): ${request.method()} ${request.url()}`);
  });
  const check = (where) => {
    if (problems.length) throw new Error(`${where}:\n  ${[...new Set(problems)].join("\n  ")}`);
  };

  if (process.env.LOGIN_TOKEN) {
    // Strata: the viewer's DICOMweb requests ride on the admin UI's session cookie.
    step("log in to the admin UI (the viewer uses its session)");
    await page.goto(`${origin}/ui/login`);
    await page.fill("#token", process.env.LOGIN_TOKEN);
    await page.click("button[type=submit]");
    await page.waitForURL((url) => !url.pathname.startsWith("/ui/login"), { timeout });
  }

  step(`study list at ${viewerUrl}`);
  const qido = page.waitForResponse((response) => {
    const url = new URL(response.url());
    return url.href.startsWith(dicomwebRoot + "/studies?") && !url.searchParams.has("StudyInstanceUID")
      && response.request().method() === "GET";
  });
  await page.goto(viewerUrl);
  const qidoResponse = await qido.catch(() => {
    throw new Error(`the study list made no QIDO-RS query to ${dicomwebRoot}/studies (app-config.js's qidoRoot? the bundle's chunks?)`);
  });
  if (!qidoResponse.ok()) throw new Error(`the study list's QIDO-RS query answered ${qidoResponse.status()}`);
  const studies = await qidoResponse.json();
  const study = studies.find((s) => s["0020000D"]?.Value?.[0] === studyUid);
  if (!study) {
    throw new Error(`the study list's QIDO-RS query (${qidoResponse.url()}) returned ${studies.length} studies, none with StudyInstanceUID ${studyUid}`);
  }
  const pn = study["00100010"]?.Value?.[0]?.Alphabetic ?? "";
  const shownName = formatPN(process.env.PATIENT_NAME || pn);
  if (!shownName) throw new Error("the study has no patient name to find its row by; set PATIENT_NAME");
  const row = page.locator("tr", { has: page.getByText(shownName, { exact: true }) }).first();
  await row.waitFor({ state: "visible" }).catch(() => {
    throw new Error(`the study list never showed a row for "${shownName}" (study ${studyUid})`);
  });
  await page.screenshot({ path: join(shots, "study-list.png") });
  check("on the study list");

  step(`select the row of "${shownName}" and launch the Basic Viewer`);
  await row.click();
  const basicViewer = page.getByRole("button", { name: "Basic Viewer", exact: true });
  let launched = false;
  try {
    await basicViewer.waitFor({ state: "visible", timeout: 10_000 });
    await page.screenshot({ path: join(shots, "study-selected.png") });
    await basicViewer.click();
    await page.waitForURL(/\/viewer\?/, { timeout: 10_000 });
    launched = true;
  } catch (error) {
    console.log(`   no Basic Viewer button led to the viewer (${error.message.split("\n")[0]}); opening it by URL`);
  }
  const direct = `${viewerUrl}viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
  if (!launched) {
    await page.goto(direct);
  } else {
    const opened = new URL(page.url()).searchParams.get("StudyInstanceUIDs");
    if (opened !== studyUid) {
      throw new Error(`the row of "${shownName}" opened study ${opened}, not ${studyUid}`);
    }
  }
  if (!page.url().startsWith(`${viewerUrl}viewer?`)) {
    throw new Error(`the viewer is at ${page.url()}, not under ${viewerUrl}viewer (routerBasename?)`);
  }

  step("wait for the viewport to draw the image");
  const canvas = page.locator(".cornerstone-canvas").first();
  await canvas.waitFor({ state: "visible" }).catch(() => {
    throw new Error("no viewport canvas (.cornerstone-canvas) appeared");
  });
  // Copy the on-screen canvas into a 2D canvas and measure its luminance: a drawn CT slice has
  // many grey levels and spread; a blank or black viewport has neither.
  const measure = () => canvas.evaluate((source) => {
    const { width, height } = source;
    if (!width || !height) return { width, height, distinct: 0, stddev: 0, mean: 0 };
    const copy = document.createElement("canvas");
    copy.width = width;
    copy.height = height;
    const ctx = copy.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(source, 0, 0);
    const data = ctx.getImageData(0, 0, width, height).data;
    const levels = new Set();
    let sum = 0, sum2 = 0, n = 0;
    for (let i = 0; i < data.length; i += 4 * 7) { // every 7th pixel is plenty
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      levels.add(Math.round(y));
      sum += y;
      sum2 += y * y;
      n += 1;
    }
    const mean = sum / n;
    return { width, height, distinct: levels.size, mean, stddev: Math.sqrt(Math.max(0, sum2 / n - mean * mean)) };
  });
  const drawDeadline = Date.now() + timeout;
  let stats = await measure();
  while (!(stats.distinct >= 16 && stats.stddev >= 8)) {
    check("while the viewer loaded");
    if (Date.now() > drawDeadline) {
      await page.screenshot({ path: join(shots, "viewer.png") });
      throw new Error(`the viewport stayed blank: ${JSON.stringify(stats)} (screenshot viewer.png)`);
    }
    await page.waitForTimeout(250);
    stats = await measure();
  }
  console.log(`   canvas ${stats.width}x${stats.height}: ${stats.distinct} grey levels, mean ${stats.mean.toFixed(1)}, stddev ${stats.stddev.toFixed(1)}`);
  // A settled frame for the record, after the viewer's own loading of the remaining slices.
  await page.waitForLoadState("networkidle", { timeout: 10_000 }).catch(() => {});
  await page.screenshot({ path: join(shots, "viewer.png") });
  await page.locator(".viewport-element").first().screenshot({ path: join(shots, "viewport.png") });
  check("in the viewer");
  if (external.length) {
    throw new Error(`the viewer reached outside ${origin}:\n  ${[...new Set(external)].join("\n  ")}`);
  }
  const frames = dicomweb.filter((r) => /\/frames\/\d/.test(r.url)).length;
  step(`ok: study ${studyUid} listed as "${shownName}" and drawn; ${dicomweb.length} DICOMweb requests (${frames} frames)`);
} catch (error) {
  failed = true;
  console.error(`FAIL [${elapsed()}] ${error.message}`);
  const also = [...new Set(problems)].filter((p) => !error.message.includes(p));
  if (also.length) console.error(`  also: ${also.slice(0, 10).join("\n  also: ")}`);
} finally {
  if (consoleErrors.length) {
    console.log(`   ${consoleErrors.length} console error(s), first: ${consoleErrors[0].slice(0, 300)}`);
  }
  if (process.env.REQUEST_LOG) writeFileSync(process.env.REQUEST_LOG, JSON.stringify(dicomweb, null, 1));
  await browser.close();
}
console.log(failed ? `ohif: FAILED after ${elapsed()}` : `ohif: passed in ${elapsed()}`);
process.exit(failed ? 1 : 0);
