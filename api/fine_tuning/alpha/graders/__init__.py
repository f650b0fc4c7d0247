"""`/v1/fine_tuning/alpha/graders`: run a grader on one sample, or validate one."""
