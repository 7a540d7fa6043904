// Browser APIs @grafana/ui (and uPlot, at import time) use that jsdom lacks.
// Loaded before anything imports @grafana/*.
const matchMedia = (query: string) => ({
  matches: false,
  media: query,
  onchange: null,
  addListener: () => {},
  removeListener: () => {},
  addEventListener: () => {},
  removeEventListener: () => {},
  dispatchEvent: () => false,
});
Object.defineProperty(window, 'matchMedia', { writable: true, value: matchMedia });
Object.defineProperty(globalThis, 'matchMedia', { writable: true, value: matchMedia });

class NoopObserver {
  observe() {}
  unobserve() {}
  disconnect() {}
  takeRecords() {
    return [];
  }
}
globalThis.ResizeObserver = globalThis.ResizeObserver ?? (NoopObserver as unknown as typeof ResizeObserver);
globalThis.IntersectionObserver =
  globalThis.IntersectionObserver ?? (NoopObserver as unknown as typeof IntersectionObserver);
Element.prototype.scrollIntoView = Element.prototype.scrollIntoView ?? (() => {});

export {};
