import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Tests that mount, unshare or start servers use real kernel state; keep
    // files isolated in their own processes.
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
