// The renter app's service worker (filled in by cloud/renter/pages.py: the build and the shell).
//
// It keeps the app shell (the page, its scripts, styles, icons, Leaflet) so the app opens with
// no network, and NEVER keeps an API answer: /api/ requests (money, tokens, passes) always go
// to the network and are not even looked at here. Tiles are left to the browser.
const BUILD = '__BUILD__';
const SHELL = __SHELL__;
const CACHE = `renter-app-${BUILD}`;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(['/app/', ...SHELL])).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('renter-app-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith('/app/') || url.pathname === '/app/sw.js') return; // /api/: network only
  if (event.request.mode === 'navigate') {
    // every /app/ address is the same shell: the network's when it answers, else the kept one
    event.respondWith(fetch(event.request).catch(() => caches.match('/app/', { cacheName: CACHE })));
    return;
  }
  if (url.pathname.startsWith(`/app/s/${BUILD}/`)) {
    // this build's files never change (their address has the build): kept, then served from here
    event.respondWith(
      caches.open(CACHE).then((cache) =>
        cache.match(event.request).then((hit) =>
          hit ||
          fetch(event.request).then((response) => {
            if (response.ok) cache.put(event.request, response.clone());
            return response;
          }),
        ),
      ),
    );
  }
});
