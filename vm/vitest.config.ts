import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["vm/**/*.test.ts"],
    pool: "forks",
    fileParallelism: false,
    passWithNoTests: true,
    testTimeout: 1_800_000,
    hookTimeout: 3_600_000,
  },
});
