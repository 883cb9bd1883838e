// Opens a self-contained HTML report (volcam validate's report.html) in the system's headless Chromium and
// reports what the browser made of it, as JSON.
//
//   node report_page.mjs < request.json
//
// request: {"file": the report's absolute path, "screenshot": a PNG to write, "profile": a fresh folder for
// Chromium's profile, "report": the JSON file to write, "width": the viewport's width, "height": how much of
// the page's top the screenshot shows (0: the whole page), "timeout_ms": for loading}.
//
// The report: every console message and page error, every request the page made other than itself and data:
// URIs (a self-contained page makes none), the headings, the page's text, each image's size once decoded, and
// under print media whether the contents are hidden. Nothing here decides pass or fail: the pytest test does.
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium'; // the system's (Debian package): never a downloaded browser
const ARGS = [
  '--no-sandbox', // CI runs as root in a container, where Chromium's sandbox cannot start
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const request = JSON.parse(fs.readFileSync(0, 'utf8'));
const report = { console: [], errors: [], requests: [] };
const url = pathToFileURL(request.file).href;
let context;
try {
  context = await chromium.launchPersistentContext(request.profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: request.width ?? 1200, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', message => report.console.push({ type: message.type(), text: message.text() }));
  page.on('pageerror', error => report.errors.push(String(error)));
  page.on('request', r => {
    if (r.url() !== url && !r.url().startsWith('data:')) report.requests.push(r.url());
  });
  page.on('requestfailed', r => report.errors.push(`request failed: ${r.url()}`));
  await page.goto(url, { waitUntil: 'load', timeout: request.timeout_ms ?? 60000 });
  report.title = await page.title();
  report.headings = await page.$$eval('h2', hs => hs.map(h => h.textContent.trim()));
  report.text = await page.evaluate(() => document.body.innerText);
  report.images = await page.$$eval('img', images =>
    images.map(i => ({ complete: i.complete, width: i.naturalWidth, height: i.naturalHeight })),
  );
  report.height = await page.evaluate(() => document.documentElement.scrollHeight);
  const clip = request.height ? { x: 0, y: 0, width: request.width ?? 1200, height: request.height } : undefined;
  await page.screenshot({ path: request.screenshot, fullPage: true, clip }); // a clip may reach below the viewport
  await page.emulateMedia({ media: 'print' });
  report.print_nav = await page.$eval('nav', nav => getComputedStyle(nav).display);
} catch (error) {
  report.error = String(error);
} finally {
  if (context) await context.close();
  fs.writeFileSync(request.report, JSON.stringify(report, null, 1));
}
process.exit(report.error ? 1 : 0);
