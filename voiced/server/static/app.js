// The voiced browser page: pairing, the WebSocket protocol (voiced.v1, protocol/PROTOCOL.md), microphone
// capture through an AudioWorklet, gapless playback of the streamed reply audio, and the turn's text and timings.
// No framework and nothing fetched from elsewhere: the page must work offline and its CSP allows only 'self'.
'use strict';

(() => {
  const PROTOCOL = 'voiced.v1';
  const INPUT_RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000];
  const OUTPUT_RATES = [16000, 22050, 24000, 48000];
  const CREDENTIAL_KEY = 'voiced.credential';
  const FRAME_HEADER = 16;
  const KIND_MIC = 1;
  const KIND_REPLY = 2;
  const PLAY_LEAD_S = 0.05; // first chunk of a reply starts this far ahead, so scheduling never lands in the past
  const FRAME_MS = 20;

  const $ = (id) => document.getElementById(id);

  // Everything the page knows, in one place; exposed for people debugging in the console and for the tests.
  const view = {
    connected: false,
    paired: false,
    authFailed: false,
    sessionId: null,
    state: 'idle',
    mode: 'hands-free',
    micRate: null,
    playRate: null,
    micFramesSent: 0,
    transcript: '',
    reply: '',
    replies: [],
    lastTimings: null,
    scheduledSamples: 0,
    playedSamples: 0,
    replyAudioStreams: 0,
    errors: [],
    activation: null, // the daemon's activation mode from the welcome: always | wake | push
    shownState: 'offline', // what the state pill says (the daemon's state, corrected for local playback and offline)
    ignored: [], // turn_ignored reasons, newest last
    timers: {}, // id -> the last timer_* message and the page clock when it came: the countdown runs from there
  };
  window.voiced = view;

  // ------------------------------------------------------------------------------------------------ pairing
  // The code arrives in the URL fragment (never sent to any server); it is removed from the address bar at once
  // so that it does not stay in history, then traded for a session credential kept in sessionStorage.
  function takePairingCode() {
    const m = /(?:^#|&)pair=([^&]+)/.exec(location.hash);
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    return m ? decodeURIComponent(m[1]) : null;
  }

  let pairingCode = takePairingCode();

  function showPairing(text) {
    $('pairing-text').textContent = text;
    $('pairing').hidden = false;
  }

  function status(text) {
    $('status').textContent = text;
  }

  // ------------------------------------------------------------------------------------------------ audio
  // One context for both directions, created now so its rate can go in the hello; browsers keep it suspended
  // until a click, which every button does. The microphone gets echo cancellation (hands-free next to the
  // speaker) but no noise suppression or gain control: they pump and clip, and Whisper hears raw speech better.
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  const playRate = OUTPUT_RATES.includes(ctx.sampleRate) ? ctx.sampleRate : 48000;
  const player = { next: 0, sources: new Set(), streams: new Map() };
  view.playRate = playRate;

  function unlockAudio() {
    if (ctx.state !== 'running') ctx.resume().catch(() => {});
  }

  function stopPlayback() {
    for (const s of player.sources) {
      try {
        s.stop();
      } catch (_) {
        /* already stopped */
      }
    }
    player.sources.clear();
    player.next = 0;
    renderState();
  }

  function playFrame(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < FRAME_HEADER || dv.getUint8(0) !== 1 || dv.getUint8(1) !== KIND_REPLY) return;
    const stream = dv.getUint32(4, true);
    const rate = dv.getUint32(12, true);
    if (!player.streams.has(stream)) return; // a reply already stopped here
    const pcm = new Int16Array(buf, FRAME_HEADER, (buf.byteLength - FRAME_HEADER) >> 1);
    if (!pcm.length) return;
    const f = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
    const ab = ctx.createBuffer(1, f.length, rate);
    ab.copyToChannel(f, 0);
    const src = ctx.createBufferSource();
    src.buffer = ab;
    src.connect(ctx.destination);
    // Gapless: each chunk starts exactly where the previous one ends; only after an underrun (the next start is
    // already past) does it start "now + lead", which is the one audible gap there is no way around.
    const t = Math.max(player.next, ctx.currentTime + PLAY_LEAD_S);
    src.start(t);
    player.next = t + ab.duration;
    player.sources.add(src);
    src.onended = () => {
      if (player.sources.delete(src)) view.playedSamples += f.length;
      renderState();
    };
    renderState();
    view.scheduledSamples += f.length;
  }

  // ------------------------------------------------------------------------------------------------ microphone
  const mic = { node: null, media: null, rate: 0, stream: 0, open: false, seq: 0, starting: null };

  async function startMicrophone() {
    if (mic.node) return;
    unlockAudio();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('this browser gives no microphone to this page (is it served from http://127.0.0.1?)');
    }
    mic.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    await ctx.audioWorklet.addModule('/worklet.js');
    mic.rate = INPUT_RATES.includes(ctx.sampleRate) ? ctx.sampleRate : 16000;
    view.micRate = mic.rate;
    const source = ctx.createMediaStreamSource(mic.media);
    const node = new AudioWorkletNode(ctx, 'voiced-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: 'explicit',
      processorOptions: { outRate: mic.rate, frameMs: FRAME_MS },
    });
    node.port.onmessage = (e) => sendMicFrame(new Int16Array(e.data));
    source.connect(node);
    node.connect(ctx.destination); // silent output; keeps the node pulled by the graph in every browser
    mic.node = node;
    $('mic').textContent = 'Stop microphone';
    $('mic').classList.add('active');
    if (view.mode === 'hands-free') openMicStream();
  }

  function stopMicrophone() {
    closeMicStream();
    if (mic.node) mic.node.disconnect();
    if (mic.media) mic.media.getTracks().forEach((t) => t.stop());
    mic.node = null;
    mic.media = null;
    $('mic').textContent = 'Start microphone';
    $('mic').classList.remove('active');
  }

  function openMicStream() {
    if (mic.open || !mic.node || !view.connected) return;
    mic.stream = (mic.stream + 1) >>> 0;
    mic.seq = 0;
    mic.open = true;
    send({ type: 'audio_start', stream: mic.stream, rate: mic.rate, format: 's16le', channels: 1 });
  }

  function closeMicStream() {
    if (!mic.open) return;
    mic.open = false;
    send({ type: 'audio_end', stream: mic.stream });
  }

  function sendMicFrame(pcm) {
    if (!mic.open || !view.connected) return;
    const buf = new ArrayBuffer(FRAME_HEADER + pcm.byteLength);
    const dv = new DataView(buf);
    dv.setUint8(0, 1); // frame version
    dv.setUint8(1, KIND_MIC);
    dv.setUint8(2, 1); // s16le
    dv.setUint8(3, 1); // mono
    dv.setUint32(4, mic.stream, true);
    dv.setUint32(8, mic.seq, true);
    dv.setUint32(12, mic.rate, true);
    new Int16Array(buf, FRAME_HEADER).set(pcm);
    mic.seq = (mic.seq + 1) >>> 0;
    ws.send(buf);
    view.micFramesSent += 1;
  }

  // Push-to-talk: the daemon hears the microphone only while the button (or the space bar) is held; release
  // ends the utterance at once instead of waiting for the silence that ends a hands-free turn.
  let talking = false;

  async function talkDown() {
    if (talking || view.mode !== 'push-to-talk' || !view.connected) return;
    talking = true;
    $('talk').setAttribute('aria-pressed', 'true');
    stopPlayback();
    try {
      await startMicrophone();
    } catch (e) {
      fail(e);
      talking = false;
      return;
    }
    send({ type: 'push_to_talk', pressed: true });
    openMicStream();
  }

  function talkUp() {
    if (!talking) return;
    talking = false;
    $('talk').setAttribute('aria-pressed', 'false');
    if (mic.node) mic.node.port.postMessage('flush');
    // audio_end first: the server flushes the stream into the utterance while push-to-talk is still held
    setTimeout(() => {
      closeMicStream();
      send({ type: 'push_to_talk', pressed: false });
    }, FRAME_MS);
  }

  function setMode(mode) {
    view.mode = mode;
    $('talk').hidden = mode !== 'push-to-talk';
    if (mode === 'push-to-talk') closeMicStream();
    else openMicStream();
  }

  // ------------------------------------------------------------------------------------------------ connection
  let ws = null;
  let retryMs = 500;

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function connect() {
    const secret = pairingCode || sessionStorage.getItem(CREDENTIAL_KEY);
    if (!secret) {
      showPairing('This page is not paired with the daemon.');
      return;
    }
    const usingCode = Boolean(pairingCode);
    pairingCode = null; // a code works once, whatever happens next
    let welcomed = false;
    ws = new WebSocket(`ws://${location.host}/`, PROTOCOL);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'hello', token: secret, name: 'browser page', roles: ['listener', 'microphone'], audio_rate: playRate }));
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== 'string') {
        playFrame(e.data);
        return;
      }
      const msg = JSON.parse(e.data);
      if (msg.type === 'welcome') welcomed = true;
      onMessage(msg);
    };
    ws.onclose = (e) => {
      view.connected = false;
      mic.open = false;
      setPill('conn', 'offline', 'off');
      renderState();
      if (!welcomed && e.code === 1008) {
        sessionStorage.removeItem(CREDENTIAL_KEY);
        view.authFailed = true;
        view.paired = false;
        showPairing(
          usingCode
            ? 'That link was wrong, expired or already used.'
            : 'The pairing of this page has expired.',
        );
        status('not connected: pairing refused');
        return;
      }
      status(`connection lost (code ${e.code}); retrying`);
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 8000);
    };
  }

  function setPill(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = `pill ${cls || ''}`;
  }

  function onMessage(msg) {
    switch (msg.type) {
      case 'welcome':
        if (msg.credential) sessionStorage.setItem(CREDENTIAL_KEY, msg.credential);
        view.connected = true;
        view.paired = true;
        view.sessionId = msg.session_id;
        retryMs = 500;
        $('pairing').hidden = true;
        setPill('conn', 'connected', 'on');
        status('connected');
        showActivation(msg.activation);
        renderState();
        if (view.mode === 'hands-free') openMicStream();
        send({ type: 'list_timers' }); // timers that were running before this page came
        break;
      case 'state':
        view.state = msg.state;
        renderState();
        break;
      case 'turn_ignored':
        showIgnored(msg);
        break;
      case 'transcript':
        view.transcript = msg.text;
        $('transcript').textContent = msg.text;
        if (msg.final) {
          view.reply = '';
          $('reply').textContent = '';
        }
        break;
      case 'reply_started':
        stopPlayback();
        $('ignored').hidden = true;
        view.reply = '';
        $('reply').textContent = '';
        break;
      case 'reply_delta':
        view.reply += msg.text;
        $('reply').textContent = view.reply;
        break;
      case 'reply_audio_start':
        player.streams.set(msg.stream, msg);
        view.replyAudioStreams += 1;
        break;
      case 'reply_audio_end':
        player.streams.delete(msg.stream);
        break;
      case 'reply_done':
        onReplyDone(msg);
        break;
      case 'timer_started':
      case 'timer_updated':
      case 'timer_cancelled':
      case 'timer_finished':
        onTimer(msg);
        break;
      case 'timers':
        view.timers = {};
        for (const t of msg.items) view.timers[t.id] = { ...t, at: performance.now() };
        renderTimers();
        break;
      case 'error':
        view.errors.push(msg);
        status(`daemon: ${msg.message}`);
        break;
      default: // newer servers may add types (PROTOCOL.md, versioning): ignore them
    }
  }

  function onReplyDone(msg) {
    if (msg.interrupted) stopPlayback();
    view.reply = msg.text;
    $('reply').textContent = msg.text;
    view.lastTimings = msg.timings_ms;
    view.replies.push({ transcript: view.transcript, text: msg.text, interrupted: msg.interrupted, timings_ms: msg.timings_ms });
    showTimings(msg.timings_ms || {});
    const li = document.createElement('li');
    li.textContent = `${view.transcript ? `“${view.transcript}” → ` : ''}${msg.text}${msg.interrupted ? ' (interrupted)' : ''}`;
    $('history').prepend(li);
  }

  // ------------------------------------------------------------------------------------------------ what the user sees
  // The page says what the daemon did and why, in the user's terms: the turns it ignored, how it is listening,
  // what it is doing now (a reply still playing here is "speaking" even after the daemon went idle), and how long
  // the user waited for the answer.

  const IGNORED_REASONS = {
    no_speech: 'no words were heard in that sound',
    not_addressed: 'it was not said to voiced (start with the wake phrase)',
    stop_command: 'heard a stop word: nothing more to say',
    outside_push_to_talk: 'this daemon answers only while push-to-talk is held',
  };

  function showIgnored(msg) {
    const why = IGNORED_REASONS[msg.reason] || msg.reason;
    view.ignored.push(msg.reason);
    const el = $('ignored');
    el.textContent = `Not answered: ${why}.`;
    el.dataset.reason = msg.reason;
    el.hidden = false;
    const li = document.createElement('li');
    li.className = 'ignored';
    li.textContent = `(not answered: ${why})`;
    $('history').prepend(li);
  }

  const ACTIVATION_TEXT = {
    always: 'The daemon answers everything it hears.',
    wake: 'The daemon answers when you start with its wake phrase.',
    push: 'The daemon answers only while you hold “Hold to talk” (or the space bar).',
  };

  function showActivation(mode) {
    view.activation = mode || null;
    const hint = $('activation');
    hint.textContent = ACTIVATION_TEXT[mode] || '';
    hint.hidden = !ACTIVATION_TEXT[mode];
    const handsFree = document.querySelector('input[name="mode"][value="hands-free"]');
    const held = document.querySelector('input[name="mode"][value="push-to-talk"]');
    if (mode === 'push') {
      // hands-free audio would be ignored by this daemon: push-to-talk is the only way in
      handsFree.parentElement.hidden = true;
      held.parentElement.lastChild.textContent = ' push-to-talk';
      held.checked = true;
      setMode('push-to-talk');
    } else {
      handsFree.parentElement.hidden = false;
      // not push-to-talk for this daemon: holding the button only decides when this page sends the microphone
      held.parentElement.lastChild.textContent = ' hold to send (the button only gates this microphone)';
    }
  }

  function renderState() {
    let shown = view.state;
    if (!view.connected) shown = 'offline';
    else if (player.sources.size > 0 && shown === 'idle') shown = 'speaking'; // the reply is still coming out here
    view.shownState = shown;
    const el = $('state');
    el.textContent = shown;
    el.dataset.state = shown;
  }

  function refuseWhileOffline(text) {
    if (view.connected) return false;
    const why = view.paired || sessionStorage.getItem(CREDENTIAL_KEY)
      ? 'the daemon is not connected (it is retrying); ask again when the badge says connected'
      : 'this page is not paired: run `voiced open` and open the link it prints';
    view.errors.push({ code: 'offline', message: `not sent: ${why}`, text });
    status(`Question not sent: ${why}.`);
    return true; // the text stays in the box, ready to send again
  }

  const TIMING_LABELS = {
    last_word_to_first_audio: 'your last word → first sound of the answer',
    end_of_turn_silence: 'silence waited to be sure you had finished',
    end_of_speech_to_first_audio: 'end of your turn → first sound',
    asr: 'your words recognised',
    first_token: 'first word of the answer',
    first_clause: 'first phrase ready to speak',
    first_audio: 'first sound of the answer',
    done: 'whole answer written',
    prefill_ms: 'reading the conversation',
    decode_ms: 'writing the answer',
    prefill_tokens: 'conversation read (tokens)',
    decode_tokens: 'answer length (tokens)',
    prefill_while_speaking_tokens: 'read while you spoke (tokens)',
  };

  function showTimings(timings) {
    const wait = timings.last_word_to_first_audio ?? timings.first_audio;
    const headline = $('latency-headline');
    headline.textContent = wait === undefined ? ''
      : `${'last_word_to_first_audio' in timings ? 'From your last word to the first sound of the answer' : 'From your question to the first sound of the answer'}: ${(wait / 1000).toFixed(2)} s`;
    const body = $('timings').tBodies[0];
    body.replaceChildren(
      ...Object.entries(timings).map(([k, v]) => {
        const tr = document.createElement('tr');
        const name = document.createElement('td');
        const value = document.createElement('td');
        name.textContent = TIMING_LABELS[k] || k.replaceAll('_', ' ');
        name.title = k; // the protocol's own key, for developers
        value.textContent = /tokens$/.test(k) ? `${Math.round(v)}` : `${Math.round(v)} ms`; // counts ride along with the times
        if (k === 'last_word_to_first_audio') tr.className = 'headline';
        tr.append(name, value);
        return tr;
      }),
    );
  }
  // ------------------------------------------------------------------------------------------------ timers
  // Running timers, alarms and reminders with a countdown, from the daemon's timer_* messages (PROTOCOL.md 3.1).
  function onTimer(msg) {
    if (msg.type === 'timer_started' || msg.type === 'timer_updated') {
      view.timers[msg.id] = { ...msg, at: performance.now() };
    } else {
      delete view.timers[msg.id];
    }
    renderTimers();
  }

  function left(t) {
    const s = t.active ? t.remaining_s - (performance.now() - t.at) / 1000 : t.remaining_s;
    return Math.max(0, Math.ceil(s));
  }

  function clock(s) {
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  }

  function renderTimers() {
    const items = Object.values(view.timers).sort((a, b) => left(a) - left(b));
    $('timers-box').hidden = items.length === 0;
    $('timers').replaceChildren(
      ...items.map((t) => {
        const li = document.createElement('li');
        li.dataset.id = t.id;
        const label = t.kind === 'reminder' ? `reminder: ${t.text || ''}` : t.name ? `${t.name} ${t.kind}` : t.kind;
        const when = document.createElement('span');
        when.className = 'countdown';
        when.textContent = t.kind === 'timer' ? clock(left(t)) + (t.active ? '' : ' (paused)') : new Date(t.due_at).toLocaleString();
        li.append(`${label} `, when);
        return li;
      }),
    );
  }
  setInterval(() => Object.keys(view.timers).length && renderTimers(), 1000);

  function fail(e) {
    view.errors.push({ code: 'page', message: String(e && e.message ? e.message : e) });
    status(`microphone: ${e && e.message ? e.message : e}`);
  }

  // ------------------------------------------------------------------------------------------------ wiring
  $('mic').addEventListener('click', () => {
    if (mic.node) stopMicrophone();
    else startMicrophone().catch(fail);
  });
  $('stop').addEventListener('click', () => {
    unlockAudio();
    stopPlayback();
    send({ type: 'cancel' });
  });
  $('ask').addEventListener('submit', (e) => {
    e.preventDefault();
    unlockAudio();
    const text = $('query').value.trim();
    if (!text) return;
    if (refuseWhileOffline(text)) return;
    view.transcript = text;
    $('transcript').textContent = text;
    send({ type: 'text_query', text, request_id: `page-${Date.now()}` });
    $('query').value = '';
  });
  for (const r of document.querySelectorAll('input[name="mode"]')) {
    r.addEventListener('change', () => r.checked && setMode(r.value));
  }
  const talk = $('talk');
  talk.addEventListener('pointerdown', (e) => {
    talk.setPointerCapture(e.pointerId);
    talkDown();
  });
  talk.addEventListener('pointerup', talkUp);
  talk.addEventListener('pointercancel', talkUp);
  document.addEventListener('keydown', (e) => {
    if (e.code === 'Space' && !e.repeat && view.mode === 'push-to-talk' && e.target.tagName !== 'INPUT') {
      e.preventDefault();
      talkDown();
    }
  });
  document.addEventListener('keyup', (e) => {
    if (e.code === 'Space' && view.mode === 'push-to-talk') talkUp();
  });

  connect();
})();
