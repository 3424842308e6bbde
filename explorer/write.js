// Writing: PUT a value with a content type (optionally only if unchanged: If-Match),
// DELETE after a confirmation. The server's answer is shown as it is, errors with the
// `detail` of their problem document (412, 413, 403, 429 …).

import { request, failure } from './api.js';
import { topicPath, asText } from './util.js';

export class Writer {
  /** `form` holds the inputs (ids w-*), `dialog` asks before a DELETE. */
  constructor({ form, dialog, onSaved }) {
    this.form = form;
    this.dialog = dialog;
    /** Runs with the thing after a successful PUT (the page then opens it). */
    this.onSaved = onSaved;
    this.f = {
      thing: form.querySelector('#w-thing'),
      type: form.querySelector('#w-type'),
      value: form.querySelector('#w-value'),
      binary: form.querySelector('#w-binary'),
      ifMatch: form.querySelector('#w-ifmatch'),
      etag: form.querySelector('#w-etag'),
      del: form.querySelector('#w-delete'),
      result: form.querySelector('#w-result'),
    };
    /** The ETag of the value loaded into the form, for If-Match. */
    this.etag = null;
    /** Whether the user typed into the value since it was loaded. */
    this.edited = false;
    this.f.value.addEventListener('input', () => { this.edited = true; });
    this.f.thing.addEventListener('input', () => { this.edited = true; });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.put();
    });
    this.f.value.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        this.put();
      }
    });
    this.f.del.addEventListener('click', () => this.confirmDelete());
    dialog.querySelector('#confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
    dialog.querySelector('#confirm-delete').addEventListener('click', () => dialog.close('delete'));
    dialog.addEventListener('close', () => {
      if (dialog.returnValue === 'delete') this.delete(this.pendingDelete);
      else this.f.del.focus();
    });
  }

  /** Fill the form with `thing`'s value (unless the user is editing that same thing). */
  load(thing, current, { force = false } = {}) {
    const same = this.f.thing.value === thing;
    if (same && this.edited && !force) {
      this.etag = this.etag ?? current?.etag ?? null;
      return;
    }
    this.f.thing.value = thing;
    this.edited = false;
    this.etag = current?.etag ?? null;
    this.f.etag.textContent = this.etag ?? 'none';
    this.f.ifMatch.disabled = !this.etag;
    if (!this.etag) this.f.ifMatch.checked = false;
    if (!current) {
      this.f.value.value = '';
      this.f.binary.hidden = true;
      return;
    }
    this.f.type.value = current.ct || 'text/plain';
    const text = current.bytes ? asText(current.bytes) : null;
    this.f.value.value = text ?? '';
    this.f.binary.hidden = text !== null;
  }

  show(ok, message) {
    this.f.result.textContent = message;
    this.f.result.className = ok ? 'ok' : 'error';
    this.f.result.setAttribute('role', ok ? 'status' : 'alert');
  }

  async put() {
    const thing = this.f.thing.value;
    if (!thing) {
      this.show(false, 'Name the thing to write (its topic, such as kitchen/temperature).');
      this.f.thing.focus();
      return;
    }
    const headers = { 'Content-Type': this.f.type.value.trim() || 'text/plain' };
    if (this.f.ifMatch.checked && this.etag) headers['If-Match'] = this.etag;
    let r;
    try {
      r = await request(`/resources/${topicPath(thing)}`, { method: 'PUT', headers, body: this.f.value.value });
    } catch (e) {
      this.show(false, `Not sent: ${e.message}`);
      return;
    }
    if (r.ok) {
      this.edited = false;
      this.show(true, `Saved ${thing}: ${r.status} ${r.status === 201 ? 'Created' : 'replaced'}`);
      this.onSaved?.(thing);
    } else {
      this.show(false, await failure(r));
    }
  }

  confirmDelete() {
    const thing = this.f.thing.value;
    if (!thing) {
      this.show(false, 'Name the thing to delete.');
      return;
    }
    this.pendingDelete = thing;
    this.dialog.querySelector('#confirm-thing').textContent = thing;
    this.dialog.returnValue = '';
    this.dialog.showModal();
  }

  async delete(thing) {
    const headers = {};
    if (this.f.ifMatch.checked && this.etag) headers['If-Match'] = this.etag;
    let r;
    try {
      r = await request(`/resources/${topicPath(thing)}`, { method: 'DELETE', headers });
    } catch (e) {
      this.show(false, `Not sent: ${e.message}`);
      return;
    }
    if (r.ok) this.show(true, `Deleted ${thing}`);
    else this.show(false, await failure(r));
  }
}
