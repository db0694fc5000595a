// Search on a site opened from disk. Browsers refuse `new Worker(url)` for file:// pages,
// and the theme runs its search in a Worker. On file:// pages only, this replaces Worker
// with a hidden same-origin iframe that runs the worker's script and passes its messages.
// Served over HTTP the browser's own Worker is used. (The file name contains
// "iframe-worker" so that Material's offline plugin does not add its copy from a CDN.)
(function () {
  "use strict";
  if (location.protocol !== "file:") return;

  class FrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.pending = [];
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      (document.body || document.documentElement).appendChild(this.frame);
      const inner = this.frame.contentWindow;
      // The worker's postMessage(x) is a message to this page.
      inner.postMessage = (data) => this.dispatchEvent(new MessageEvent("message", { data }));
      inner.importScripts = () => {
        throw new Error("importScripts is not available to a worker of a page opened from disk");
      };
      const script = inner.document.createElement("script");
      script.src = new URL(url, location.href).href;
      script.onload = () => {
        this.inner = inner;
        this.pending.splice(0).forEach((data) => this.postMessage(data));
      };
      script.onerror = () => this.dispatchEvent(new Event("error"));
      inner.document.head.appendChild(script);
    }

    postMessage(data) {
      if (!this.inner) {
        this.pending.push(data);
        return;
      }
      // Asynchronous, as a worker's messages are.
      setTimeout(() => this.inner.dispatchEvent(new this.inner.MessageEvent("message", { data })));
    }

    terminate() {
      this.frame.remove();
    }
  }

  window.Worker = FrameWorker;
})();
