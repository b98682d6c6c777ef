// Loaded into a role with `node --import ./bench/gc-log.mjs` (bench/roles-rss.ts
// --gc-log): every 60 s, and at exit, prints to stderr the heap still live after
// this process's major GCs (the lowest and highest in the window), how many there
// were, and the largest heap V8 held meanwhile. Live heap is what a ceiling on the
// old generation must leave room for; heap size is what RSS follows.
import process from 'node:process';
import { setInterval } from 'node:timers';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';

const MB = 1024 * 1024;
let window = { majors: 0, liveMin: Infinity, liveMax: 0, heapMax: 0 };
const role = process.argv.slice(2).join(' ') || 'node';

new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const h = getHeapStatistics();
    window.heapMax = Math.max(window.heapMax, h.total_heap_size);
    if (entry.detail?.kind !== constants.NODE_PERFORMANCE_GC_MAJOR) continue;
    window.majors++;
    window.liveMin = Math.min(window.liveMin, h.used_heap_size);
    window.liveMax = Math.max(window.liveMax, h.used_heap_size);
  }
}).observe({ entryTypes: ['gc'] });

function report() {
  const w = window;
  window = { majors: 0, liveMin: Infinity, liveMax: 0, heapMax: 0 };
  const live =
    w.majors > 0 ? `${(w.liveMin / MB).toFixed(0)}–${(w.liveMax / MB).toFixed(0)} MB` : 'n/a';
  process.stderr.write(
    `gc-log ${role} (pid ${process.pid}): ${w.majors} major GCs, live heap after them ${live}, heap up to ${(w.heapMax / MB).toFixed(0)} MB\n`,
  );
}
setInterval(report, 60_000).unref();
process.on('exit', report);
