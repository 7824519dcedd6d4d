// Microphone capture on the audio thread: float samples -> s16le frames of `frameMs`, posted to the page.
// The page picks the output rate: the context's own rate when the daemon accepts it (its soxr resampler does a
// better job than anything cheap here), otherwise 16 kHz, reached with a windowed-sinc low-pass and
// linear interpolation (enough for speech, whose energy is well under 8 kHz).
'use strict';

function lowpass(cutoff, taps) {
  // cutoff as a fraction of the input rate; Blackman window
  const h = new Float32Array(taps);
  const m = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - m;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

class VoicedCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.outRate = o.outRate || sampleRate;
    this.frameLen = Math.max(1, Math.round((this.outRate * (o.frameMs || 20)) / 1000));
    this.frame = new Int16Array(this.frameLen);
    this.fill = 0;
    this.step = sampleRate / this.outRate; // input samples per output sample
    if (this.step !== 1) {
      const taps = 2 * Math.ceil(4 * Math.max(1, this.step)) + 1;
      this.h = lowpass(Math.min(0.5, (0.45 * this.outRate) / sampleRate), taps);
      this.ring = new Float32Array(taps); // last `taps` inputs, newest at this.head
      this.head = 0;
      this.prev = 0; // filtered value of the previous input sample
      this.phase = 0; // position of the next output, in input samples after `prev`
    }
    this.port.onmessage = (e) => {
      if (e.data === 'flush') this.flush();
    };
  }

  push(v) {
    const s = v <= -1 ? -32768 : v >= 1 ? 32767 : Math.round(v * 32767);
    this.frame[this.fill++] = s;
    if (this.fill === this.frameLen) this.flush();
  }

  flush() {
    if (this.fill === 0) return;
    const out = this.frame.slice(0, this.fill);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.fill = 0;
  }

  filtered(x) {
    const n = this.ring.length;
    this.head = (this.head + 1) % n;
    this.ring[this.head] = x;
    let acc = 0;
    let j = this.head;
    for (let k = 0; k < n; k++) {
      acc += this.h[k] * this.ring[j];
      j = j === 0 ? n - 1 : j - 1;
    }
    return acc;
  }

  process(inputs) {
    const input = inputs[0];
    const ch = input && input[0];
    if (!ch) return true;
    if (this.step === 1) {
      for (let i = 0; i < ch.length; i++) this.push(ch[i]);
      return true;
    }
    for (let i = 0; i < ch.length; i++) {
      const cur = this.filtered(ch[i]);
      // outputs that fall between the previous input sample and this one
      while (this.phase <= 1) {
        this.push(this.prev + (cur - this.prev) * this.phase);
        this.phase += this.step;
      }
      this.phase -= 1;
      this.prev = cur;
    }
    return true;
  }
}

registerProcessor('voiced-capture', VoicedCapture);
