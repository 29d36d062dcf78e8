// The HTTP response headers of a rate-limit decision, as the IETF RateLimit draft defines them:
// the current fields (draft 07 on: `RateLimit-Policy` and `RateLimit`, one list member per
// window) and the older trio most clients still read (`RateLimit-Limit`, `-Remaining`,
// `-Reset`, up to draft 06), plus `Retry-After` on a denial. Times are whole seconds, rounded up.

export type RateLimitHeaders = Record<string, string>;

export interface DecisionForHeaders {
  allowed: boolean;
  remaining: number;
  retryAfterMs: number;
  resetMs: number;
  policy: string;
  windows: { limit: number; windowMs: number; remaining: number; resetMs: number }[];
}

const seconds = (ms: number) => Math.ceil(ms / 1000);

/** A window's name in the list fields: the policy and the window length, e.g. "api/60s". */
function windowName(policy: string, windowMs: number): string {
  const length = windowMs % 1000 === 0 ? `${windowMs / 1000}s` : `${windowMs}ms`;
  // Policy names are restricted by set_rate_limit to characters a structured string may hold.
  return `"${policy.replace(/[\\"]/g, "\\$&")}/${length}"`;
}

export function rateLimitHeaders(decision: DecisionForHeaders): RateLimitHeaders {
  const { windows } = decision;
  const names = windows.map((w) => windowName(decision.policy, w.windowMs));
  // The older fields carry one window: the one closest to exhaustion, as remaining/resetMs do.
  let closest = windows[0];
  for (const w of windows) {
    if (w.remaining < closest!.remaining || (w.remaining === closest!.remaining && w.resetMs > closest!.resetMs))
      closest = w;
  }
  const headers: RateLimitHeaders = {
    "RateLimit-Policy": windows
      .map((w, i) => `${names[i]};q=${w.limit};w=${Math.max(1, seconds(w.windowMs))}`)
      .join(", "),
    RateLimit: windows.map((w, i) => `${names[i]};r=${w.remaining};t=${seconds(w.resetMs)}`).join(", "),
    "RateLimit-Limit": String(closest?.limit ?? 0),
    "RateLimit-Remaining": String(decision.remaining),
    "RateLimit-Reset": String(seconds(decision.resetMs)),
  };
  if (!decision.allowed) headers["Retry-After"] = String(Math.max(1, seconds(decision.retryAfterMs)));
  return headers;
}
