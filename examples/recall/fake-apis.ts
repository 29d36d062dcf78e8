// The external APIs a resolve calls (transcription, intent, completion, music recognition),
// simulated in this process: each answers after a configurable latency, fails at a configurable
// rate, and stops when its signal aborts. Nothing leaves the machine.

export type ApiName = "transcription" | "intent" | "completion" | "music_recognition";
const API_NAMES: readonly ApiName[] = ["transcription", "intent", "completion", "music_recognition"];

export interface FakeApiSettings {
  /** Mean latency; each call takes between half and one and a half times this. */
  latencyMs: number;
  /** Share of calls that fail, 0 to 1. */
  failureRate: number;
}

/** The simulated API failed (as a real one would with a 5xx). */
export class FakeApiError extends Error {
  readonly api: ApiName;
  constructor(api: ApiName) {
    super(`simulated ${api} API failed`);
    this.name = "FakeApiError";
    this.api = api;
  }
}

export class FakeApis {
  readonly settings: Record<ApiName, FakeApiSettings>;

  constructor(settings: Partial<Record<ApiName, Partial<FakeApiSettings>>> = {}) {
    const defaults: FakeApiSettings = { latencyMs: 20, failureRate: 0 };
    this.settings = Object.fromEntries(API_NAMES.map((name) => [name, { ...defaults, ...settings[name] }])) as Record<
      ApiName,
      FakeApiSettings
    >;
  }

  /** Changes an API's behaviour from now on (tests and the README's experiments use it). */
  set(api: ApiName, settings: Partial<FakeApiSettings>): void {
    Object.assign(this.settings[api], settings);
  }

  /** One call: resolves with a made-up answer derived from `input`, or rejects. */
  call(api: ApiName, input: string, signal: AbortSignal): Promise<string> {
    const { latencyMs, failureRate } = this.settings[api];
    const delay = latencyMs * (0.5 + Math.random());
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        if (Math.random() < failureRate) reject(new FakeApiError(api));
        else resolve(answerOf(api, input));
      }, delay);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

function answerOf(api: ApiName, input: string): string {
  switch (api) {
    case "transcription":
      // The "audio" of the simulation is the words themselves.
      return input;
    case "intent":
      // A question about a song goes to music recognition; everything else to completion.
      return /song|music|hum/i.test(input) ? "song" : "chat";
    case "completion":
      return `An answer to: ${input.slice(0, 80)}`;
    case "music_recognition":
      return "Never Gonna Give You Up (Rick Astley, 1987)";
  }
}
