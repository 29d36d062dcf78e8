import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/setup/global.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // Test files run in parallel, each in a database of its own copied from a migrated template.
    pool: "forks",
    fileParallelism: true,
  },
});
