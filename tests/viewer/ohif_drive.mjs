// Opens a study in OHIF in the system's headless Chromium and reports what the viewer made of it, as JSON.
//
//   node ohif_drive.mjs < request.json
//
// request: {"url": the site's origin, "study": a StudyInstanceUID, "profile": a fresh folder for Chromium's
// profile, "screenshots": a folder, "report": the JSON file to write, "timeout_ms": for each wait}.
//
// It does what a user would: opens /viewer?StudyInstanceUIDs=..., double-clicks the Parametric Map's
// thumbnail in the study browser; opens the study again, double-clicks the Segmentation's and answers "Yes"
// to loading it. After each step it reads OHIF's own state (window.services, window.cornerstone and
// window.cornerstoneTools, which OHIF's cornerstone extension exposes) and takes a screenshot. The report is
// written on failure too, with "error" set and exit status 1. Nothing here decides pass or fail: the pytest
// test (test_ohif.py) compares the report with volcam's files.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium'; // the system's (Debian package): never a downloaded browser
const ARGS = [
  // WebGL without a GPU (SwiftShader): cornerstone renders every viewport with it
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
  '--no-sandbox', // CI runs as root in a container, where Chromium's sandbox cannot start
  // a closed network: without these Chromium keeps calling Google's services and floods refused connections
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

const request = JSON.parse(fs.readFileSync(0, 'utf8'));
const timeout = request.timeout_ms ?? 60000;
const report = { console: [], notifications: [], timings: {}, screenshots: {} };
const started = Date.now();
const mark = name => (report.timings[name] = (Date.now() - started) / 1000);

// -- what runs in the page ------------------------------------------------------------------------------

/** The study's display sets (CT, PMAP, SEG): their UIDs and modalities, and whether each has loaded. */
function displaySets() {
  const sets = window.services?.displaySetService?.getActiveDisplaySets?.() ?? [];
  return sets.map(d => ({ uid: d.displaySetInstanceUID, modality: d.Modality, loaded: Boolean(d.isLoaded) }));
}

/** Record every notification OHIF shows (the SEG colour warning is one), before anything is opened. */
function recordNotifications() {
  const service = window.services.uiNotificationService;
  const show = service.show.bind(service);
  window.__notifications = [];
  service.show = note => {
    const { type = '', title = '', message = '' } = note;
    window.__notifications.push({ type, title, message: String(message) });
    return show(note);
  };
}

/** A cornerstone volume's geometry and, per slice k (its third index), the world position of voxel
 *  (0, 0, k) and the slice's sum, minimum and maximum. */
function volumeSlices(volumeId) {
  const volume = window.cornerstone.cache.getVolume(volumeId);
  if (!volume) return null;
  const [nx, ny, nz] = volume.dimensions;
  const data = volume.voxelManager.getCompleteScalarDataArray();
  const slices = [];
  for (let k = 0; k < nz; k++) {
    let sum = 0, min = Infinity, max = -Infinity;
    for (let i = k * nx * ny; i < (k + 1) * nx * ny; i++) {
      const v = data[i];
      sum += v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    slices.push({ position: Array.from(volume.imageData.indexToWorld([0, 0, k])), sum, min, max });
  }
  return {
    volumeId,
    loaded: !!volume.loadStatus?.loaded,
    dimensions: Array.from(volume.dimensions),
    spacing: Array.from(volume.spacing),
    direction: Array.from(volume.direction),
    type: data.constructor.name,
    slices,
  };
}

/** The CT volume the Parametric Map was built on (cornerstone's id), once all its frames are in. */
function ctVolumeId(pmapUid) {
  const pmap = window.services.displaySetService.getDisplaySetByUID(pmapUid);
  const id = pmap?.getReferencedVolumeId?.();
  return id && window.cornerstone.cache.getVolume(id)?.loadStatus?.loaded ? id : null;
}

/** Show the slice through `world` in the active viewport: a stack goes to the image whose plane is
 *  nearest, a volume moves its camera along the view normal. */
function showSliceThrough(world) {
  const { viewportGridService } = window.services;
  const engine = window.cornerstone.getRenderingEngines()[0];
  const viewport = engine.getViewport(viewportGridService.getActiveViewportId());
  const camera = viewport.getCamera();
  const n = camera.viewPlaneNormal;
  const along = p => p[0] * n[0] + p[1] * n[1] + p[2] * n[2];
  if (typeof viewport.setImageIdIndex === 'function') {
    const ids = viewport.getImageIds();
    const position = id => window.cornerstone.metaData.get('imagePlaneModule', id).imagePositionPatient;
    const distance = id => Math.abs(along(position(id)) - along(world));
    const best = ids.reduce((b, id, i) => (distance(id) < distance(ids[b]) ? i : b), 0);
    return viewport.setImageIdIndex(best).then(() => viewport.render());
  }
  const d = along(world) - along(camera.focalPoint);
  const shift = p => p.map((v, i) => v + d * n[i]);
  viewport.setCamera({ focalPoint: shift(camera.focalPoint), position: shift(camera.position) });
  viewport.render();
}

/** Whether the active viewport draws the volume `volumeId` (one of its actors). */
function showsVolume(volumeId) {
  const engine = window.cornerstone.getRenderingEngines()[0];
  const viewport = engine?.getViewport(window.services.viewportGridService.getActiveViewportId());
  const actors = viewport?.getActors?.() ?? [];
  return actors.some(a => a.referencedId === volumeId || a.uid === volumeId || String(a.referencedId).endsWith(volumeId));
}

/** The segmentation's labelmap as OHIF holds it: per labelmap image, the plane of the CT image it lies on
 *  and the (row, column) of its non-zero voxels, with their label. */
function labelmap(segUid) {
  const segmentation = window.cornerstoneTools.segmentation.state.getSegmentation(segUid);
  const data = segmentation?.representationData?.Labelmap;
  if (!data?.imageIds?.length) return null;
  const images = data.imageIds.map((id, i) => {
    const image = window.cornerstone.cache.getImage(id);
    const values = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
    const plane = window.cornerstone.metaData.get('imagePlaneModule', data.referencedImageIds[i]);
    const voxels = [];
    for (let j = 0; j < values.length; j++) {
      if (values[j]) voxels.push([Math.floor(j / plane.columns), j % plane.columns, values[j]]);
    }
    return {
      position: plane.imagePositionPatient,
      rowCosines: plane.rowCosines,
      columnCosines: plane.columnCosines,
      rowPixelSpacing: plane.rowPixelSpacing, // between rows (mm)
      columnPixelSpacing: plane.columnPixelSpacing, // between columns
      rows: plane.rows,
      columns: plane.columns,
      voxels,
    };
  });
  return { segmentationId: segUid, segments: Object.keys(segmentation.segments), images };
}

// -- the user's steps ----------------------------------------------------------------------------------

/** A screenshot once the viewport has drawn what it was just given (two animation frames, then a moment
 *  for WebGL), without the notification toasts over the viewport (they are in the report). */
async function screenshot(page, name) {
  await page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.waitForTimeout(500);
  await page.addStyleTag({ content: '[data-sonner-toaster] { display: none !important; }' });
  const file = path.join(request.screenshots, `${name}.png`);
  await page.screenshot({ path: file });
  report.screenshots[name] = file;
}

/** Open the study in the viewer as a user would from a link; resolves to its display sets by modality. */
async function openStudy(page) {
  await page.goto(`${request.url}/viewer?StudyInstanceUIDs=${request.study}`);
  await page.waitForFunction(() => !!window.services?.uiNotificationService, null, { timeout });
  await page.evaluate(recordNotifications);
  const all = ['CT', 'PMAP', 'SEG'];
  await page
    .waitForFunction(
      all => {
        const sets = window.services.displaySetService.getActiveDisplaySets();
        return all.every(m => sets.some(d => d.Modality === m));
      },
      all,
      { timeout, polling: 200 }
    )
    .catch(() => {}); // a missing one is reported below
  report.displaySets = await page.evaluate(displaySets);
  const uids = Object.fromEntries(report.displaySets.map(d => [d.modality, d.uid]));
  const absent = all.filter(modality => !uids[modality]);
  if (absent.length) throw new Error(`OHIF shows no ${absent} display set: ${JSON.stringify(report.displaySets)}`);
  return uids;
}

/** The notifications shown since the page was loaded, added to the report (a reload forgets them). */
async function keepNotifications(page) {
  report.notifications.push(...(await page.evaluate(() => window.__notifications ?? []).catch(() => [])));
}

async function drive(page) {
  // the onboarding tour would cover the viewport: marked as seen, as after a user's first visit
  await page.addInitScript(() => localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])));
  let uid = await openStudy(page);
  mark('study');

  // the Parametric Map: OHIF builds it on the CT's volume, in a volume viewport
  await page.locator(`[id="thumbnail-${uid.PMAP}"]`).dblclick();
  await page.waitForFunction(u => window.services.displaySetService.getDisplaySetByUID(u)?.isLoaded, uid.PMAP, {
    timeout,
  });
  const ctId = await page.waitForFunction(ctVolumeId, uid.PMAP, { timeout, polling: 200 }).then(h => h.jsonValue());
  mark('parametric map');
  report.ct = await page.evaluate(volumeSlices, ctId);
  report.pmap = await page.evaluate(volumeSlices, uid.PMAP);
  const hottest = report.pmap.slices.reduce((b, s, k, all) => (s.max > all[b].max ? k : b), 0);
  const lesion = report.pmap.slices[hottest].position;
  // the map's layer is added to the viewport after its volume loaded: a screenshot before shows the bare CT
  await page.waitForFunction(showsVolume, uid.PMAP, { timeout, polling: 200 });
  await page.evaluate(showSliceThrough, lesion);
  await screenshot(page, 'parametric-map');
  await keepNotifications(page);

  // the Segmentation, in the study opened anew: after the map, OHIF keeps the map's colours on the CT.
  // OHIF asks before it replaces what the viewport shows.
  uid = await openStudy(page);
  await page.locator(`[id="thumbnail-${uid.SEG}"]`).dblclick();
  await page.getByRole('button', { name: 'Yes', exact: true }).click({ timeout });
  await page.waitForFunction(
    u => window.services.displaySetService.getDisplaySetByUID(u)?.isLoaded &&
      window.cornerstoneTools.segmentation.state.getSegmentation(u)?.representationData?.Labelmap?.imageIds?.length,
    uid.SEG,
    { timeout, polling: 200 }
  );
  mark('segmentation');
  report.labelmap = await page.evaluate(labelmap, uid.SEG);
  await page.evaluate(showSliceThrough, lesion);
  await screenshot(page, 'segmentation');
  await keepNotifications(page);
}

const browser = await chromium.launchPersistentContext(request.profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ARGS,
  viewport: { width: 1280, height: 800 },
});
let status = 0;
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on('console', message => report.console.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', error => report.console.push(`pageerror: ${error.message}`));
  try {
    await drive(page);
  } catch (error) {
    report.error = String(error?.stack ?? error);
    status = 1;
    await screenshot(page, 'failure').catch(() => {});
    await keepNotifications(page);
  }
} finally {
  await browser.close();
}
mark('total');
fs.writeFileSync(request.report, JSON.stringify(report)); // a file: stdout cut short by process.exit
process.exit(status);
