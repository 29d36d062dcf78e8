import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimitArgumentError, RateLimiter } from "../src/client/rate-limits.ts";
import { rateLimitHeaders } from "../src/client/rate-limit-headers.ts";
import { createClientRole, type ClientRole } from "./client-role.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let app: ClientRole;
let statements = 0;
beforeAll(async () => {
  app = await createClientRole(context.db);
  // Every statement the client sends checks a connection out of the pool once.
  app.pool.on("acquire", () => statements++);
  await context.db.pool.query(
    "select steward.set_rate_limit('api', 10, '1 minute'), steward.set_rate_limit('api', 100, '1 hour')",
  );
  await context.db.pool.query("select steward.set_rate_limit('single', 10, '1 hour')");
});
afterAll(async () => {
  await app?.drop();
});

describe("RateLimiter.hit", () => {
  it("sends the hits of one tick as one statement and gives each caller its own answer", async () => {
    const limiter = new RateLimiter(app.pool, { parallel: 1 });
    const before = statements;
    const keys = Array.from({ length: 50 }, (_, i) => `user-${i}`);
    const decisions = await Promise.all(keys.map((key) => limiter.hit("single", key)));
    expect(statements - before).toBe(1);
    expect(decisions.every((d) => d.allowed && d.remaining === 9 && d.policy === "single")).toBe(true);
  });

  it("answers hits on one key within a tick in call order, exactly", async () => {
    const limiter = new RateLimiter(app.pool);
    const decisions = await Promise.all(Array.from({ length: 14 }, () => limiter.hit("single", "crowded")));
    expect(decisions.map((d) => d.allowed)).toEqual([...Array(10).fill(true), ...Array(4).fill(false)]);
    expect(decisions.map((d) => d.remaining)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0]);
    expect(decisions[10]!.retryAfterMs).toBe(360_000);
  });

  it("splits a tick into statements of at most maxBatch hits, and a busy one into parallel statements", async () => {
    const limiter = new RateLimiter(app.pool, { maxBatch: 64, parallel: 2 });
    const sent = async (count: number, prefix: string) => {
      const before = statements;
      await Promise.all(Array.from({ length: count }, (_, i) => limiter.hit("single", `${prefix}-${i}`)));
      return statements - before;
    };
    expect(await sent(130, "many")).toBe(3);
    expect(await sent(32, "busy")).toBe(2);
    expect(await sent(31, "quiet")).toBe(1);
  });

  it("fails only the caller whose hit is bad", async () => {
    const limiter = new RateLimiter(app.pool);
    const [good, unknown, alsoGood] = await Promise.allSettled([
      limiter.hit("single", "fine"),
      limiter.hit("no-such-policy", "fine"),
      limiter.hit("single", "fine", 2),
    ]);
    expect(good).toMatchObject({ status: "fulfilled", value: { allowed: true, remaining: 9 } });
    expect(alsoGood).toMatchObject({ status: "fulfilled", value: { allowed: true, remaining: 7 } });
    expect(unknown.status).toBe("rejected");
    const error = (unknown as PromiseRejectedResult).reason;
    expect(error).toBeInstanceOf(RateLimitArgumentError);
    expect(error).toMatchObject({
      code: "RATE_LIMIT_ARGUMENT",
      sqlstate: "22023",
      message: 'unknown rate-limit policy "no-such-policy"',
    });
  });

  it("refuses, before the database, what would fail the whole batch", async () => {
    const limiter = new RateLimiter(app.pool);
    const before = statements;
    await expect(limiter.hit("single", "")).rejects.toThrow("key must be a non-empty string");
    await expect(limiter.hit("single", "a\u0000b")).rejects.toThrow("must not contain NUL");
    await expect(limiter.hit("single", "k", 1.5)).rejects.toThrow("cost must be a positive integer, got 1.5");
    await expect(limiter.hit("single", "k", 0)).rejects.toBeInstanceOf(RateLimitArgumentError);
    expect(statements).toBe(before);
  });

  it("returns the IETF RateLimit headers, one list member per window", async () => {
    const limiter = new RateLimiter(app.pool);
    const decision = await limiter.hit("api", "headers", 4);
    expect(decision.windows).toEqual([
      { limit: 10, windowMs: 60_000, remaining: 6, resetMs: 24_000 },
      { limit: 100, windowMs: 3_600_000, remaining: 96, resetMs: 144_000 },
    ]);
    expect(decision.headers).toEqual({
      "RateLimit-Policy": '"api/60s";q=10;w=60, "api/3600s";q=100;w=3600',
      RateLimit: '"api/60s";r=6;t=24, "api/3600s";r=96;t=144',
      "RateLimit-Limit": "10",
      "RateLimit-Remaining": "6",
      "RateLimit-Reset": "24",
    });
    // Built when first read, and part of the decision as JSON.
    expect(JSON.parse(JSON.stringify(decision)).headers).toEqual(decision.headers);
    const denied = await limiter.hit("api", "headers", 7);
    expect(denied.allowed).toBe(false);
    // One more unit of the minute window is needed: at most one emission interval (6 s) away.
    expect(denied.retryAfterMs).toBeGreaterThan(0);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(6000);
    expect(denied.headers["Retry-After"]).toBe(String(Math.ceil(denied.retryAfterMs / 1000)));
  });
});

describe("rateLimitHeaders", () => {
  it("describes the window closest to exhaustion in the older fields and rounds times up", () => {
    const headers = rateLimitHeaders({
      allowed: false,
      remaining: 0,
      retryAfterMs: 1,
      resetMs: 90_001,
      policy: "login",
      windows: [
        { limit: 5, windowMs: 1_500, remaining: 2, resetMs: 600 },
        { limit: 20, windowMs: 3_600_000, remaining: 0, resetMs: 90_001 },
      ],
    });
    expect(headers).toEqual({
      "RateLimit-Policy": '"login/1500ms";q=5;w=2, "login/3600s";q=20;w=3600',
      RateLimit: '"login/1500ms";r=2;t=1, "login/3600s";r=0;t=91',
      "RateLimit-Limit": "20",
      "RateLimit-Remaining": "0",
      "RateLimit-Reset": "91",
      "Retry-After": "1",
    });
  });
});
